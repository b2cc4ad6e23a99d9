"""The stored classes of release 4: prices and order totals are :class:`Money`.

The root holds one container per class: ``accounts`` (OOBTree by username),
``products`` (OOBTree by sku), ``orders`` (LOBTree by id) and ``sessions``
(OOBTree by token). Passwords are still kept in plain text.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from decimal import Decimal

from persistent import Persistent

CENT = Decimal("0.01")

#: accounts get an address at the shop's own domain until they can give one
EMAIL_DOMAIN = "shop.example"


@dataclass(frozen=True)
class Money:
    """An exact amount of a currency, to the cent; stored inline in its owner's record."""

    amount: Decimal
    currency: str = "EUR"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", Decimal(self.amount).quantize(CENT))

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.amount + other.amount, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.amount * quantity, self.currency)


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
    """Something for sale, at a price."""

    def __init__(self, sku: str, title: str, price: Money) -> None:
        self.sku = sku
        self.title = title
        self.price = price


class Order(Persistent):
    """What an account bought: ``lines`` of (product, quantity) and their total."""

    def __init__(self, id: int, account: Account, lines: list[tuple[Product, int]]) -> None:
        self.id = id
        self.account = account
        self.lines = lines
        self.total = sum((product.price.times(qty) for product, qty in lines), Money(Decimal(0)))
        self.placed = time.time()


class Session(Persistent):
    """A login: the token handed to the client and when it stops being valid."""

    def __init__(self, account: Account, token: str, expires: float) -> None:
        self.account = account
        self.token = token
        self.expires = expires
