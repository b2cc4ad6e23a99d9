"""Two versions of an application's code in one process, for the length of a live update.

While a live update migrates the database, the application's threads keep running
the old code on the old state and the updater's thread needs the new code. Both
import classes by name through ``sys.modules``: ZODB unpickles with it, and pickle
checks, when it writes an object, that ``sys.modules[cls.__module__]`` still holds
that very class. So for each module the new code replaced, ``sys.modules`` holds a
stand-in that answers with the new module in threads marked as running the update
and with the old module everywhere else. At the switch the stand-ins answer with the
new module, but in the threads still running a transaction begun before it (which
finish on the code they began with); once the last of those ends, the stand-ins give
way to the new modules. On failure, they give way to the old ones.

ZODB's conflict resolution keeps one process-wide cache of the classes it has
looked up; while two versions are loaded, lookups of the versioned modules bypass
it (each thread must get its own version), and the switch drops what it cached.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ..storage.conflicts import route_class_lookups

_here = threading.local()


class _VersionedModule(ModuleType):
    """Stands in ``sys.modules`` for a module loaded in two versions."""

    def __init__(self, name: str, old: ModuleType, new: ModuleType, versions: CodeVersions) -> None:
        super().__init__(name)
        for attribute in ("__doc__", "__package__", "__loader__", "__spec__"):
            self.__dict__.pop(attribute, None)  # answered by the version, like everything else
        self.__dict__["_dsustore_versions"] = (old, new, versions)

    def __getattr__(self, name: str) -> Any:
        old, new, versions = self.__dict__["_dsustore_versions"]
        return getattr(new if versions.sees_new() else old, name)


class CodeVersions:
    """The old and new modules of one live update, and which threads see which."""

    def __init__(self, saved_modules: dict[str, Any], saved_path: list[str]) -> None:
        self.saved_path = saved_path
        self.old = {name: module for name, module in saved_modules.items()
                    if sys.modules.get(name) is not module}
        self.new = {name: sys.modules[name] for name in self.old if name in sys.modules}
        packages = {name.partition(".")[0] for name in self.old}
        self.added = [name for name in sys.modules
                      if name not in saved_modules and name.partition(".")[0] in packages]
        self._undo_lookups: Any = None
        self._sees_new: Callable[[], bool] | None = None
        #: whether the update committed (the new code is the process's code)
        self.switched = False

    def install(self, sees_new: Callable[[], bool] | None = None) -> None:
        """Put the stand-ins in ``sys.modules``: other threads see the old code again --
        except, once :meth:`switch` is called, those for which ``sees_new()`` is true."""
        self._sees_new = sees_new
        for name, old in self.old.items():
            new = self.new.get(name)
            if new is None:
                sys.modules[name] = old  # the new code dropped it; the old code keeps it
            elif isinstance(old, ModuleType) and isinstance(new, ModuleType):
                sys.modules[name] = _VersionedModule(name, old, new, self)
        self._undo_lookups = route_class_lookups(self.old)

    @contextmanager
    def new_code_here(self) -> Iterator[None]:
        """Run the block (the migration) with the new code in this thread."""
        before = getattr(_here, "new", False)
        _here.new = True
        try:
            yield
        finally:
            _here.new = before

    def sees_new(self) -> bool:
        """Whether the calling thread runs the new code."""
        if getattr(_here, "new", False):
            return True
        sees_new = self._sees_new
        return sees_new() if sees_new is not None else self.switched

    def switch(self) -> None:
        """The update committed: the new code is the process's code. Without ``sees_new``
        (see :meth:`install`) every thread runs it now; with it, the stand-ins stay until
        :meth:`retire`."""
        self.switched = True
        if self._sees_new is None:
            self.retire()

    def retire(self) -> None:
        """The new modules in ``sys.modules``: no thread runs the old code any more."""
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
        if self._undo_lookups is not None:
            self._undo_lookups()
            self._undo_lookups = None
