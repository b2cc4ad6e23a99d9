"""The stored classes of release 8: products and orders derive from :class:`Record`.

The root holds one container per class: ``accounts`` (OOBTree by username),
``products`` (OOBTree by sku) and ``orders`` (LOBTree by id), and the
``token_secret`` that signs login tokens.
"""

from __future__ import annotations

import time
from decimal import Decimal

from persistent import Persistent

from . import money
from .passwords import hash_password, verify_password

#: accounts get an address at the shop's own domain until they can give one
EMAIL_DOMAIN = "shop.example"


class Account(Persistent):
    """A customer who logs in with a username and a password."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.email = f"{username.lower()}@{EMAIL_DOMAIN}"
        self.password_hash = hash_password(password)
        self.created = time.time()

    def check_password(self, password: str) -> bool:
        return verify_password(password, self.password_hash)


class Record(Persistent):
    """What products and orders have in common: the time they were created."""

    created: float

    def __init__(self) -> None:
        self.created = time.time()


class Product(Record):
    """Something for sale, at a price."""

    def __init__(self, sku: str, title: str, price: money.Money) -> None:
        super().__init__()
        self.sku = sku
        self.title = title
        self.price = price


class Order(Record):
    """What an account bought: ``lines`` of (product, quantity) and their total."""

    def __init__(self, id: int, account: Account, lines: list[tuple[Product, int]]) -> None:
        super().__init__()
        self.id = id
        self.account = account
        self.lines = lines
        self.total = sum((product.price.times(qty) for product, qty in lines),
                         money.Money(Decimal(0)))
