"""A lending library's classes, as release 1 stored them (the rename benchmark's old names)."""

import persistent


class Reader(persistent.Persistent):
    def __init__(self, number: int) -> None:
        self.number = number
        self.name = f"reader {number}"
        self.email = f"reader{number}@library.example"
        self.shelves = ["fiction", "history"]
        self.sponsor = None


class Loan(persistent.Persistent):
    def __init__(self, number: int, reader: Reader) -> None:
        self.number = number
        self.title = f"book {number}"
        self.reader = reader
        self.days = 14
