"""The stored classes of the examples: authors, books, and a base some classes move under."""

import persistent
import ZODB
from persistent.mapping import PersistentMapping


class Author(persistent.Persistent):
    name: str

    def __init__(self, name):
        self.name = name


class Book(persistent.Persistent):
    title: str
    author: Author
    price: float

    def __init__(self, title, author, price):
        self.title = title
        self.author = author
        self.price = price


class Entity(persistent.Persistent):
    """A common base: everything it covers records when it was created."""

    created: float


class Magazine(Entity):
    """A magazine, which a later release put under Entity."""

    title: str

    def __init__(self, title, created):
        self.title = title
        self.created = created


class Money:
    """An amount of a currency, stored inline in the record of whatever holds it."""

    def __init__(self, amount, currency):
        self.amount = amount
        self.currency = currency

    def __repr__(self):
        return f"Money({self.amount!r}, {self.currency!r})"


def sample_database():
    """An in-memory database holding two authors, three books and two magazines as the
    first release stored them: the magazines have no ``created``."""
    db = ZODB.DB(None)
    with db.transaction() as conn:
        root = conn.root()
        le_guin, lem = Author("Ursula K. Le Guin"), Author("Stanislaw Lem")
        root["books"] = PersistentMapping({
            "earthsea": Book("A Wizard of Earthsea", le_guin, 8.5),
            "dispossessed": Book("The Dispossessed", le_guin, 9.0),
            "solaris": Book("Solaris", lem, 7.25),
        })
        magazines = []
        for title in ("Analog", "Locus"):
            magazine = Magazine.__new__(Magazine)  # as the first release stored it
            magazine.title = title
            magazines.append(magazine)
        root["magazines"] = PersistentMapping({m.title: m for m in magazines})
    return db
