"""Which database and migrations folder a command works on: arguments, environment, pyproject.toml.

Like Alembic's ``alembic.ini``, a project names its database and migrations folder
once, under ``[tool.dsustore]`` in its ``pyproject.toml``; ``--db``/``--migrations``
and the ``DSUSTORE_DB``/``DSUSTORE_MIGRATIONS`` environment variables override it.

``sys_path`` (a folder or a list of them, relative to ``pyproject.toml``; default:
the folder of ``pyproject.toml``, else the current folder) is where the project's
code is imported from. Like Alembic's ``prepend_sys_path``, the command puts it at
the front of ``sys.path`` before anything is imported, so stored classes and the
migrations' imports resolve without ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DSUError

ENV_DB = "DSUSTORE_DB"
ENV_MIGRATIONS = "DSUSTORE_MIGRATIONS"
DEFAULT_MIGRATIONS = "migrations"


@dataclass(frozen=True)
class Settings:
    """Which database and migrations folder a command works on, and where each came from."""

    db: str | None
    migrations: Path
    source: str
    #: folders to put at the front of ``sys.path`` (see :func:`prepend_sys_path`)
    sys_path: tuple[Path, ...] = field(default=())
    #: how many automatic snapshots a successful run keeps (None: all of them)
    keep_snapshots: int | None = None


def resolve_settings(db: str | None = None, migrations: str | os.PathLike[str] | None = None,
                     *, cwd: Path | None = None) -> Settings:
    """Settings from, in order: explicit arguments, the environment, pyproject.toml."""
    cwd = cwd or Path.cwd()
    tool = _pyproject_settings(cwd)
    source = "--db"
    if db is None:
        db, source = os.environ.get(ENV_DB) or None, ENV_DB
    if db is None:
        db, source = tool.get("db"), "pyproject.toml"
    if db is None:
        source = "none"
    folder = migrations or os.environ.get(ENV_MIGRATIONS) or tool.get("migrations") \
        or DEFAULT_MIGRATIONS
    folder_path = Path(folder)
    if not folder_path.is_absolute():
        folder_path = cwd / folder_path
    return Settings(db=str(db) if db is not None else None, migrations=folder_path, source=source,
                    sys_path=_sys_path(tool.get("sys_path", "."), cwd),
                    keep_snapshots=_keep_snapshots(tool.get("keep_snapshots"), cwd))


def prepend_sys_path(folders: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Put ``folders`` at the front of ``sys.path``, in order (moving them there if they
    are further back); returns what ``sys.path`` starts with now."""
    added = [str(Path(folder).resolve()) for folder in folders]
    rest = [entry for entry in sys.path if _resolved(entry) not in added]
    sys.path[:] = [*added, *rest]
    return added


def _resolved(entry: str) -> str:
    try:
        return str(Path(entry or ".").resolve())
    except OSError:
        return entry


def _sys_path(value: Any, base: Path) -> tuple[Path, ...]:
    folders = [value] if isinstance(value, str) else value
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise DSUError(f"[tool.dsustore] sys_path in {base / 'pyproject.toml'} must be a folder "
                       f"or a list of folders, not {value!r}")
    return tuple(base / Path(folder).expanduser() for folder in folders)


def _keep_snapshots(value: Any, base: Path) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DSUError(f"[tool.dsustore] keep_snapshots in {base / 'pyproject.toml'} must be a "
                       f"whole number, 0 or more, not {value!r}")
    return value


def _pyproject_settings(cwd: Path) -> dict[str, Any]:
    path = cwd / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise DSUError(f"cannot read {path}: {err}") from err
    section = data.get("tool", {}).get("dsustore", {})
    return section if isinstance(section, dict) else {}
