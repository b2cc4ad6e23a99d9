"""The class a writer creates at full speed while migrations add fields to it."""

from __future__ import annotations

from typing import Any

from persistent import Persistent


class Item(Persistent):
    """Made with the fields the writer's code knows; migrations add ``f1``, ``f2``..."""

    def __init__(self, number: int, **fields: Any) -> None:
        self.number = number
        self.__dict__.update(fields)
