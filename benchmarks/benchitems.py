"""The class the benchmarks store (importable by the measuring subprocesses)."""

import persistent


class Item(persistent.Persistent):
    def __init__(self, number: int) -> None:
        self.number = number
        self.name = f"item {number}"
        self.tags = ["a", "b"]
