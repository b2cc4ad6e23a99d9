"""Which database and migrations folder a command works on: arguments, environment, pyproject.toml.

Like Alembic's ``alembic.ini``, a project names its database and migrations folder
once, under ``[tool.dsustore]`` in its ``pyproject.toml``; ``--db``/``--migrations``
and the ``DSUSTORE_DB``/``DSUSTORE_MIGRATIONS`` environment variables override it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
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
    return Settings(db=str(db) if db is not None else None, migrations=folder_path, source=source)


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
