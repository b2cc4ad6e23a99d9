"""Persistent classes the tests store and migrate (a small shop, several releases in one)."""

from __future__ import annotations

import persistent
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping


class User(persistent.Persistent):
    def __init__(self, name: str, password: str = "secret", legacy_flag: bool = True) -> None:
        self.name = name
        self.password = password
        self.legacy_flag = legacy_flag

    def greeting(self) -> str:
        return f"hello {self.name}"


class Admin(User):
    def __init__(self, name: str, level: int = 1) -> None:
        super().__init__(name)
        self.level = level


class Product(persistent.Persistent):
    def __init__(self, title: str, price: float) -> None:
        self.title = title
        self.price = price


class Money:
    """A value object stored inline in the record of its owner."""

    def __init__(self, amount: float, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.amount, self.currency) == (other.amount, other.currency)

    def __repr__(self) -> str:
        return f"Money({self.amount!r}, {self.currency!r})"


class Dimensions:
    """A value stored inline, with slots instead of a ``__dict__``."""

    __slots__ = ("width", "height", "depth")

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height


class Point:
    """A value stored inline through its own ``__reduce__``: its fields are its arguments."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __reduce__(self):
        return Point, (self.x, self.y)


class Order(persistent.Persistent):
    def __init__(self, user: User, items: list[Product]) -> None:
        self.user = user
        self.items = items


class Session(persistent.Persistent):
    def __init__(self, user: User) -> None:
        self.user = user


class Entity(persistent.Persistent):
    """A common base introduced by a later release."""

    created: str

    created = "unknown"


class Audited(persistent.Persistent):
    """A base whose field has no default: instances need a value."""

    audited_by: str


class Note(persistent.Persistent):
    def __init__(self, text: str) -> None:
        self.text = text


class Moved(persistent.Persistent):
    def __init__(self, value: int) -> None:
        self.value = value


def populate(root, *, users: int = 5, products: int = 3, orders: int = 4, sessions: int = 2) -> None:
    """A small shop graph under the root."""
    root["users"] = OOBTree()
    for i in range(users):
        user = Admin(f"user{i}") if i == 0 else User(f"user{i}", password=f"pw{i}")
        root["users"][user.name] = user
    root["products"] = PersistentMapping()
    for i in range(products):
        root["products"][f"p{i}"] = Product(f"product {i}", 10.0 + i)
    all_users = list(root["users"].values())
    all_products = list(root["products"].values())
    root["orders"] = [
        Order(all_users[i % len(all_users)], all_products[: 1 + i % len(all_products)])
        for i in range(orders)
    ]
    root["sessions"] = PersistentMapping(
        {f"s{i}": Session(all_users[i % len(all_users)]) for i in range(sessions)}
    )
