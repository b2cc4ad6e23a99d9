"""Release 4: prices and order totals are Money (a Decimal amount and a currency), not floats.

The application validation checks that no order total changed on the way: a float
total that is not a whole number of cents would be rounded by Money, and the
update is refused instead.
"""

from decimal import Decimal

from dsustore import Validation, policies

revision = "0004"
down_revision = "0003"

PRODUCT = "sampleshop.models.Product"
ORDER = "sampleshop.models.Order"
CURRENCY = "EUR"
#: how many orders the validation reads between freeing the connections' caches
CACHE_BATCH = 5000


def money_class():
    """Money as the running code has it: in ``sampleshop.models`` until release 6 moved it."""
    try:
        from sampleshop.money import Money
    except ImportError:
        from sampleshop.models import Money
    return Money


def exact(value):
    """The decimal a float total stands for (its shortest repr, so 0.1 is 0.1)."""
    return Decimal(repr(value))


def to_money(value):
    return money_class()(exact(value), CURRENCY)


def to_float(money):
    return float(money.amount)


class OrderTotalsUnchanged(Validation):
    """Every order total is the same amount, to the cent, as before the update."""

    def execute(self, old_ns, new_ns):
        Validation.__init__(self)  # a retried patch validates again from scratch
        old_orders = old_ns.root["orders"]
        for count, (number, order) in enumerate(new_ns.root["orders"].items(), 1):
            before = exact(old_orders[number].total)
            if order.total.amount != before or order.total.currency != CURRENCY:
                self.flag(order)
            if count % CACHE_BATCH == 0:
                old_ns.connection.cacheGC()
                new_ns.connection.cacheGC()
        return self.flagged_count == 0


def upgrade(patch):
    patch.migrate_instances(PRODUCT, policies.convert("price", to_money))
    patch.migrate_instances(ORDER, policies.convert("total", to_money))
    patch.add_validation(OrderTotalsUnchanged())


def downgrade(patch):
    patch.migrate_instances(PRODUCT, policies.convert("price", to_float))
    patch.migrate_instances(ORDER, policies.convert("total", to_float))
