"""The documentation cannot rot: its tutorial and testing guide run as written, its examples
run as doctests, and its API reference covers the public API."""

from __future__ import annotations

import doctest
import importlib.metadata
import os
import re
import sys
from pathlib import Path

import pytest

import dsustore
from docpages import Session

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
PAGES_WITH_EXAMPLES = sorted(path for path in DOCS.rglob("*.rst")
                             if "_build" not in path.parts and ">>> " in path.read_text())


def _plugin_env() -> dict[str, str]:
    """The plugin by name where this checkout is not installed with its entry point."""
    installed = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") and any(
        entry.name == "dsustore" for entry in importlib.metadata.entry_points(group="pytest11"))
    return {} if installed else {"PYTEST_ADDOPTS": "-p dsustore.pytest_plugin"}


def test_the_tutorial_runs_as_written(tmp_path):
    """Every file of the tutorial is written and every command run in a fresh folder, in order,
    printing what the page shows."""
    Session(tmp_path).run_page(DOCS / "tutorial.rst")
    assert (tmp_path / "migrations" / "0003_isbn.py").exists()


def test_the_testing_guide_runs_as_written(tmp_path):
    """The testing guide's project passes, then fails as shown, under pytest --dsustore."""
    Session(tmp_path, env=_plugin_env()).run_page(DOCS / "guide" / "testing.rst")
    assert (tmp_path / "tests" / "test_migrations.py").exists()


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_examples_on_each_page_run(page, monkeypatch):
    """The page's >>> examples give the output it shows (doctest, ... matching anything)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    result = doctest.testfile(str(page), module_relative=False, report=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of {page.name} failed (see the output)"
    for name in [n for n in sys.modules if n == "shelf" or n.startswith("shelf.")]:
        del sys.modules[name]


def test_the_api_reference_names_every_public_name():
    """Each name dsustore exports is documented: by name in the API page, errors by the
    error module's page, modules by their own automodule."""
    api = (DOCS / "reference" / "api.rst").read_text()
    documented = set(re.findall(r"\bdsustore\.(\w+)", api))
    documented |= {name for line in re.findall(r":members:(.*(?:\n\s{13}.*)*)", api)
                   for name in re.findall(r"\w+", line)}
    errors = {name for name in dsustore.__all__ if isinstance(getattr(dsustore, name), type)
              and issubclass(getattr(dsustore, name), dsustore.DSUError)}
    modules = {"mop": "dsustore.mop", "policies": "dsustore.operations.policies",
               "validations": "dsustore.operations.validations"}
    missing = [name for name in dsustore.__all__ if name not in errors and name not in documented
               and modules.get(name, "-") not in api]
    assert missing == []
    assert ".. automodule:: dsustore.errors" in (DOCS / "reference" / "errors.rst").read_text()


def test_every_page_is_in_the_table_of_contents():
    """No page is left out of the navigation (Sphinx would only warn of it)."""
    index = (DOCS / "index.rst").read_text()
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.rst")
             if "_build" not in p.parts and p.name != "index.rst"}
    assert {page for page in pages if f"   {page}\n" not in index} == set()
