"""Project settings: where the database, the migrations and the project's code are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dsustore.errors import DSUError
from dsustore.runtime.config import prepend_sys_path, resolve_settings


def test_sys_path_defaults_to_the_folder_of_pyproject(tmp_path, monkeypatch):
    """Without a sys_path setting, the project's folder is where its code imports from."""
    monkeypatch.delenv("DSUSTORE_DB", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.dsustore]\ndb = "Data.fs"\n')
    assert resolve_settings(cwd=tmp_path).sys_path == (tmp_path / ".",)


@pytest.mark.parametrize("value, expected", [('"src"', ["src"]), ('["src", "../lib"]', ["src", "../lib"])])
def test_sys_path_is_a_folder_or_a_list_relative_to_pyproject(tmp_path, value, expected):
    """sys_path takes one folder or several, relative to pyproject.toml's folder."""
    (tmp_path / "pyproject.toml").write_text(f"[tool.dsustore]\nsys_path = {value}\n")
    assert resolve_settings(cwd=tmp_path).sys_path == tuple(tmp_path / p for p in expected)


def test_a_sys_path_of_another_type_is_refused(tmp_path):
    """A number (or anything but folders) is an error naming the file."""
    (tmp_path / "pyproject.toml").write_text("[tool.dsustore]\nsys_path = 3\n")
    with pytest.raises(DSUError, match="sys_path .* must be a folder or a list of folders"):
        resolve_settings(cwd=tmp_path)


def test_prepend_sys_path_puts_the_folders_first_once(tmp_path, monkeypatch):
    """The folders go to the front of sys.path, in order, without duplicates."""
    monkeypatch.setattr(sys, "path", ["/elsewhere", str(tmp_path / "b"), str(tmp_path / "a")])
    prepend_sys_path([tmp_path / "a", tmp_path / "b"])
    assert sys.path == [str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve()), "/elsewhere"]
    prepend_sys_path([Path(tmp_path / "a")])
    assert sys.path.count(str((tmp_path / "a").resolve())) == 1
