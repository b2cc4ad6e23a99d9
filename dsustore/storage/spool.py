"""A scan kept on local disk, for the later stages of a patch.

On ZEO every record a scan reads is a round trip to the server; a patch in several
stages would pay that once per stage. The first stage's scan is written to a
temporary file as it goes, and the later stages read it back from there (all
stages read the database as of the same transaction).
"""

from __future__ import annotations

import logging
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator

from .adapter import Record

log = logging.getLogger(__name__)


class ScanSpool:
    """The records of one scan kept in a temporary file."""

    _HEADER = struct.Struct(">8s8sQ")  # oid, tid, data length

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="dsustore-scan")  # noqa: SIM115 (closed by close())
        self.complete = False

    def keep(self, records: Iterator[Record]) -> Iterator[Record]:
        """Yield ``records``, writing each down; complete once they are all read."""
        write, pack = self._file.write, self._HEADER.pack
        for oid, tid, data in records:
            write(pack(oid, tid, len(data)))
            write(data)
            yield oid, tid, data
        self.complete = True

    def replay(self) -> Iterator[Record]:
        """The records kept, in the order they were read."""
        file = self._file
        file.flush()
        file.seek(0)
        read, unpack, size = file.read, self._HEADER.unpack, self._HEADER.size
        while True:
            header = read(size)
            if len(header) < size:
                return
            oid, tid, length = unpack(header)
            yield oid, tid, read(length)

    def close(self) -> None:
        self._file.close()


def close_apart(*closes: Callable[[], object]) -> None:
    """Call ``closes`` in another thread: closing a large temporary file frees its pages,
    which takes a while nothing needs to wait for (the file has no name; the process's
    end removes it all the same)."""
    threading.Thread(target=_call_all, args=(closes,), daemon=True,
                     name="dsustore: closing temporary files").start()


def _call_all(calls: tuple[Callable[[], object], ...]) -> None:
    for call in calls:
        try:
            call()
        except Exception:  # a temporary file that would not close: nothing to undo
            log.warning("could not close a temporary file", exc_info=True)
