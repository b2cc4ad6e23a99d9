"""The ``dsustore-cli`` directive: the command line's reference, generated from its parser.

Every command, its arguments and options, and the exit codes come from
:func:`dsustore.cli.build_parser`, the parser the ``dsustore`` command runs, so the
reference cannot say anything the command does not do.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from dsustore.cli import build_parser

#: the options every command takes, described once at the top
GLOBAL_DESTS = {"db", "migrations", "json", "verbose", "verbose_after", "quiet", "help"}


def escape(text: str) -> str:
    """Plain text as reStructuredText that shows it as it is."""
    text = text.replace("\\", "\\\\")
    text = re.sub(r"([*`|])", r"\\\1", text)
    return re.sub(r"(\w)_(\W|$)", r"\1\\_\2", text)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _option_lines(program: str, actions: list[argparse.Action]) -> list[str]:
    lines = [f".. program:: {program}", ""]
    for action in actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            takes = action.nargs != 0
            metavar = action.metavar or action.dest.upper()
            names = ", ".join(f"{name} {metavar}" if takes else name for name in action.option_strings)
        else:
            names = str(action.metavar or action.dest).upper()
        lines += [f".. option:: {names}", "", f"   {escape(action.help or '')}", ""]
    return lines


def _command(program: str, parser: argparse.ArgumentParser, summary: str, depth: int) -> list[str]:
    underline = "=-~^"[depth]
    lines = [program, underline * len(program), ""]
    usage = parser.format_usage().replace("usage: ", "").strip()
    lines += ["::", "", *(f"   {line}" for line in usage.splitlines()), ""]
    for paragraph in (parser.description or "").split("\n\n"):
        lines += [escape(" ".join(paragraph.split())), ""]
    own = [a for a in parser._actions if a.dest not in GLOBAL_DESTS]
    if any(not isinstance(a, argparse._SubParsersAction) for a in own):
        lines += _option_lines(program, own)
    for name, child in _subparsers(parser).items():
        lines += _command(f"{program} {name}", child, _helps(parser).get(name, ""), depth + 1)
    return lines


class DsustoreCli(SphinxDirective):
    """Writes the whole command line reference where it stands."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        parser = build_parser()
        # the description is the first line of the module's docstring: reStructuredText already
        lines = [parser.description or "", "", "::", ""]
        lines += [f"   {line}" for line in parser.format_usage().replace("usage: ", "").splitlines()]
        lines += ["", "Global options", "==============", "",
                  "They go before or after the command (``dsustore --json status`` or "
                  "``dsustore status --json``).", ""]
        lines += _option_lines("dsustore", [a for a in parser._actions
                                            if a.dest in GLOBAL_DESTS - {"help", "verbose_after"}])
        lines += ["Database, settings and exit codes", "=================================", "", "::", ""]
        lines += [f"   {line}" for line in (parser.epilog or "").splitlines()]
        lines += [""]
        for name, child in _subparsers(parser).items():
            lines += _command(f"dsustore {name}", child, _helps(parser).get(name, ""), 0)
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="dsustore.cli.build_parser()"),
                                 node)
        return node.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("dsustore-cli", DsustoreCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
