"""Running a documentation page as written: its files written, its shell sessions replayed.

A page that walks through a project (the tutorial, the testing guide) is a script:

* a ``code-block`` with a ``:caption:`` that names a file (``library/models.py``,
  ``pyproject.toml``) is that file's content from that point on: it is written into
  the project folder, replacing what an earlier block wrote;
* a ``code-block:: console`` is a shell session: each ``$ command`` runs in the
  project folder, and the lines after it, up to the next ``$``, are what it prints
  (stdout and stderr together), compared as doctest compares, ``...`` matching
  anything. ``$ echo $?`` prints the exit status of the command before it;
* a block with ``:class: no-run`` is shown and not run (installing dsustore, say:
  the suite runs in an environment that has it).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Block:
    """One code block of a page: its language, options, content and line."""

    language: str
    options: dict[str, str]
    content: str
    line: int


@dataclass
class Command:
    """One ``$ command`` of a console block and the output the page shows for it."""

    command: str
    expected: str
    line: int


def blocks(page: Path) -> list[Block]:
    """The ``code-block`` directives of an reStructuredText page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = re.match(r"(\s*)\.\. code-block::\s*(\S+)", lines[i])
        if not match:
            i += 1
            continue
        indent, start = len(match.group(1)), i + 1
        i += 1
        options: dict[str, str] = {}
        while i < len(lines) and re.match(r"\s+:(\w[\w-]*):\s*(.*)", lines[i]):
            key, value = re.match(r"\s+:(\w[\w-]*):\s*(.*)", lines[i]).groups()  # type: ignore[union-attr]
            options[key] = value.strip()
            i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        found.append(Block(match.group(2), options, textwrap.dedent("\n".join(body)).strip("\n") + "\n",
                           start))
    return found


def commands(block: Block) -> list[Command]:
    """The commands of a console block with the output shown after each."""
    found: list[Command] = []
    for offset, line in enumerate(block.content.splitlines()):
        if line.startswith("$ "):
            found.append(Command(line[2:], "", block.line + offset))
        elif found:
            found[-1].expected += line + "\n"
    return found


@dataclass
class Session:
    """A project folder the page's files go into and its commands run in."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    status: int = 0

    def __post_init__(self) -> None:
        env = dict(os.environ)
        for name in ("DSUSTORE_DB", "DSUSTORE_MIGRATIONS", "DSUSTORE_SNAPSHOTS", "PYTEST_ADDOPTS"):
            env.pop(name, None)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = str(ROOT)  # dsustore from this checkout, as pip install would
        env["COLUMNS"] = "80"
        self.env = {**env, **self.env}

    def run_page(self, page: Path) -> None:
        for block in blocks(page):
            if "no-run" in block.options.get("class", "").split():
                continue
            caption = block.options.get("caption", "")
            if block.language == "console":
                for command in commands(block):
                    self.check(page, command)
            elif caption and ("/" in caption or "." in caption):
                target = self.folder / caption
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.content, encoding="utf-8")

    def check(self, page: Path, command: Command) -> None:
        if command.command.strip() == "echo $?":
            got = f"{self.status}\n"
        else:
            result = subprocess.run(["bash", "-c", command.command], cwd=self.folder, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=300)
            self.status, got = result.returncode, result.stdout
        got = "\n".join(line.rstrip() for line in got.splitlines()) + ("\n" if got.strip() else "")
        want = command.expected
        checker = doctest.OutputChecker()
        if not checker.check_output(want, got, doctest.ELLIPSIS):
            raise AssertionError(
                f"{page.name}:{command.line}: `{command.command}` printed\n{got}\n"
                f"where the page shows\n{want}")
