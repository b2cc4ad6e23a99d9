"""Sphinx configuration of the dsustore documentation (``make docs``)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

with (ROOT / "pyproject.toml").open("rb") as f:
    _project = tomllib.load(f)["project"]

project = "dsustore"
author = "the dsustore authors"
copyright = "the dsustore authors"  # noqa: A001 (Sphinx's name)
release = version = _project["version"]

extensions = [
    "sphinx.ext.autodoc",
    "dsustore_cli",
]

exclude_patterns = ["_build"]
root_doc = "index"
default_role = "literal"
highlight_language = "none"
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "signature"
autoclass_content = "class"

html_theme = "alabaster"
html_title = f"dsustore {release}"
html_theme_options = {
    "description": "Atomic, validated, live upgrades of the object graphs you keep in ZODB",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []
