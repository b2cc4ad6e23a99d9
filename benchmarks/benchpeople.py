"""Where release 2 moved the library's readers (the rename benchmark's new name)."""

import persistent


class Reader(persistent.Persistent):
    def __init__(self, number: int) -> None:
        self.number = number
        self.name = f"reader {number}"
        self.email = f"reader{number}@library.example"
        self.shelves = ["fiction", "history"]
        self.sponsor = None
