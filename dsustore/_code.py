"""Two versions of an application's code in one process, for the length of a live update.

While a live update migrates the database, the application's threads keep running
the old code on the old state and the updater's thread needs the new code. Both
import classes by name through ``sys.modules``: ZODB unpickles with it, and pickle
checks, when it writes an object, that ``sys.modules[cls.__module__]`` still holds
that very class. So for each module the new code replaced, ``sys.modules`` holds a
stand-in that answers with the new module in threads marked as running the update
and with the old module everywhere else. At the switch the stand-ins give way to
the new modules; on failure, to the old ones.

ZODB's conflict resolution keeps one process-wide cache of the classes it has
looked up; while two versions are loaded, lookups of the versioned modules bypass
it (each thread must get its own version), and the switch drops what it cached.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ZODB import ConflictResolution

_here = threading.local()
_FLAG = "_dsustore_code_versions"


class _VersionedModule(ModuleType):
    """Stands in ``sys.modules`` for a module loaded in two versions."""

    def __init__(self, name: str, old: ModuleType, new: ModuleType) -> None:
        super().__init__(name)
        for attribute in ("__doc__", "__package__", "__loader__", "__spec__"):
            self.__dict__.pop(attribute, None)  # answered by the version, like everything else
        self.__dict__["_dsustore_versions"] = (old, new)

    def __getattr__(self, name: str) -> Any:
        old, new = self.__dict__["_dsustore_versions"]
        return getattr(new if getattr(_here, "new", False) else old, name)


class CodeVersions:
    """The old and new modules of one live update, and which threads see which."""

    def __init__(self, db: Any, saved_modules: dict[str, Any], saved_path: list[str]) -> None:
        self.db = db
        self.saved_path = saved_path
        self.old = {name: module for name, module in saved_modules.items()
                    if sys.modules.get(name) is not module}
        self.new = {name: sys.modules[name] for name in self.old if name in sys.modules}
        packages = {name.partition(".")[0] for name in self.old}
        self.added = [name for name in sys.modules
                      if name not in saved_modules and name.partition(".")[0] in packages]
        self._resolver: Any = None

    def install(self) -> None:
        """Put the stand-ins in ``sys.modules``: other threads see the old code again."""
        for name, old in self.old.items():
            new = self.new.get(name)
            if new is None:
                sys.modules[name] = old  # the new code dropped it; the old code keeps it
            elif isinstance(old, ModuleType) and isinstance(new, ModuleType):
                sys.modules[name] = _VersionedModule(name, old, new)
        self._resolver = ConflictResolution.find_global
        versioned = set(self.old)
        cached = self._resolver

        def find_global(*args: Any) -> Any:
            if len(args) == 2 and args[0] in versioned:
                found = getattr(sys.modules.get(args[0]), args[1], None)
                if found is not None:
                    return found
            return cached(*args)

        ConflictResolution.find_global = find_global
        setattr(self.db, _FLAG, self)

    @contextmanager
    def new_code_here(self) -> Iterator[None]:
        """Run the block (the migration) with the new code in this thread."""
        before = getattr(_here, "new", False)
        _here.new = True
        try:
            yield
        finally:
            _here.new = before

    def switch(self) -> None:
        """The new code for everyone (the update committed)."""
        for name, new in self.new.items():
            sys.modules[name] = new
        for name in self.old:
            if name not in self.new:
                sys.modules.pop(name, None)
        self._done()

    def rollback(self) -> None:
        """The old code for everyone, as before the new code was loaded (the update failed)."""
        for name in self.added:
            sys.modules.pop(name, None)
        for name, old in self.old.items():
            sys.modules[name] = old
        sys.path[:] = self.saved_path
        self._done()

    def _done(self) -> None:
        if self._resolver is not None:
            ConflictResolution.find_global = self._resolver
        for key in [key for key in ConflictResolution._class_cache if key[:1] and key[0] in self.old]:
            del ConflictResolution._class_cache[key]
        self.db.__dict__.pop(_FLAG, None)


def code_versions_active(db: Any) -> bool:
    """Whether a live update holds two versions of the code for ``db``'s process."""
    return _FLAG in db.__dict__
