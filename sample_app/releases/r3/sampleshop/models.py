"""The stored classes of release 3: accounts have an ``email``.

The root holds one container per class: ``accounts`` (OOBTree by username),
``products`` (OOBTree by sku), ``orders`` (LOBTree by id) and ``sessions``
(OOBTree by token). Passwords are kept in plain text and prices as floats: later
releases fix both.
"""

from __future__ import annotations

import hmac
import time

from persistent import Persistent

#: accounts get an address at the shop's own domain until they can give one
EMAIL_DOMAIN = "shop.example"


class Account(Persistent):
    """A customer who logs in with a username and a password."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.email = f"{username.lower()}@{EMAIL_DOMAIN}"
        self.password = password
        self.created = time.time()

    def check_password(self, password: str) -> bool:
        """Whether ``password`` is this account's; never an error, even for a lone surrogate."""
        return hmac.compare_digest(self.password.encode("utf-8", "surrogatepass"),
                                   password.encode("utf-8", "surrogatepass"))


class Product(Persistent):
    """Something for sale, priced in euros."""

    def __init__(self, sku: str, title: str, price: float) -> None:
        self.sku = sku
        self.title = title
        self.price = price


class Order(Persistent):
    """What an account bought: ``lines`` of (product, quantity) and their total."""

    def __init__(self, id: int, account: Account, lines: list[tuple[Product, int]]) -> None:
        self.id = id
        self.account = account
        self.lines = lines
        self.total = round(sum(product.price * qty for product, qty in lines), 2)
        self.placed = time.time()


class Session(Persistent):
    """A login: the token handed to the client and when it stops being valid."""

    def __init__(self, account: Account, token: str, expires: float) -> None:
        self.account = account
        self.token = token
        self.expires = expires
