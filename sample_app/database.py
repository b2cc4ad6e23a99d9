"""Opening the sample application's database: a FileStorage path, or any dsustore URI."""

from __future__ import annotations

from pathlib import Path

import ZODB
from ZODB.FileStorage import FileStorage

import dsustore


def open_database(spec: str) -> ZODB.DB:
    """A plain path opens (or creates) a FileStorage; anything with ``://`` goes to dsustore.

    ``zeo://host:port`` connects to a ZEO server, ``file://`` and ``postgresql://``
    work as in the ``dsustore`` command.
    """
    if "://" in spec:
        return dsustore.open_db(spec, create=True)
    path = Path(spec).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return ZODB.DB(FileStorage(str(path)))
