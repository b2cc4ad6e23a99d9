"""Amounts of money, exact to the cent (moved out of ``sampleshop.models`` in release 6).

Money is a value stored inline in the record of the product or order that holds
it, under the class name ``sampleshop.money.Money``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CENT = Decimal("0.01")


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
