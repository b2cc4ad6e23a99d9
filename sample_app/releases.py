"""Loading one release of the sample application's code into the running process.

Every release is a complete copy of the ``sampleshop`` package in
``releases/rN/``, like a deployed code directory, so stored classes keep the same
names (``sampleshop.models.Account``) from release to release. :func:`activate`
swaps the code a process runs: it is how a server starts on a release and how a
live update loads the next one.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
RELEASES = HERE / "releases"
#: the dsustore migrations folder: release N's migration has revision ``revision(N)``
MIGRATIONS = HERE.parent / "migrations"  # the project's migrations/ holds the sample app's
LATEST = 8
PACKAGE = "sampleshop"


def release_dir(n: int) -> Path:
    """The code directory of release ``n`` (the folder holding ``sampleshop/``).

    A bool is refused although it is an int: ``True`` would name a folder ``rTrue``.
    """
    if type(n) is not int or not 1 <= n <= LATEST:
        raise ValueError(f"no release {n!r}: releases are 1 to {LATEST}")
    return RELEASES / f"r{n}"


def revision(n: int) -> str:
    """The migration revision release ``n`` needs the database to be at."""
    release_dir(n)
    return f"{n:04d}"


def activate(n: int) -> ModuleType:
    """Make release ``n`` the code of this process and return its ``sampleshop`` package.

    Puts its directory first on ``sys.path`` (removing any other release's), drops
    every ``sampleshop`` module already imported and imports the package afresh.
    Objects already loaded keep their old classes until something reloads them.
    """
    wanted = str(release_dir(n))
    sys.path[:] = [entry for entry in sys.path if not _is_release_dir(entry)]
    sys.path.insert(0, wanted)
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module(PACKAGE)


def active_release() -> int | None:
    """The release whose ``sampleshop`` is imported, None when none is."""
    package = sys.modules.get(PACKAGE)
    release = getattr(package, "RELEASE", None)
    return release if isinstance(release, int) else None


def _is_release_dir(entry: str) -> bool:
    try:
        path = Path(entry).resolve()
    except (OSError, ValueError):
        return False
    return path.parent == RELEASES and path.name[:1] == "r" and path.name[1:].isdigit()
