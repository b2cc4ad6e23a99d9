"""The stored classes of release 6; :class:`~sampleshop.money.Money` has a module of its own.

The root holds one container per class: ``accounts`` (OOBTree by username),
``products`` (OOBTree by sku), ``orders`` (LOBTree by id) and ``sessions``
(OOBTree by token).
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


class Product(Persistent):
    """Something for sale, at a price."""

    def __init__(self, sku: str, title: str, price: money.Money) -> None:
        self.sku = sku
        self.title = title
        self.price = price


class Order(Persistent):
    """What an account bought: ``lines`` of (product, quantity) and their total."""

    def __init__(self, id: int, account: Account, lines: list[tuple[Product, int]]) -> None:
        self.id = id
        self.account = account
        self.lines = lines
        self.total = sum((product.price.times(qty) for product, qty in lines),
                         money.Money(Decimal(0)))
        self.placed = time.time()


class Session(Persistent):
    """A login: the token handed to the client and when it stops being valid."""

    def __init__(self, account: Account, token: str, expires: float) -> None:
        self.account = account
        self.token = token
        self.expires = expires
