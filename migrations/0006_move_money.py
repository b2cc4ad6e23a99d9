"""Release 6: Money moved from ``sampleshop.models`` to its own module, ``sampleshop.money``.

Money is stored inline in the records of products and orders, so renaming the
class rewrites those records. The application validation checks that every price
and total now loads as the code's Money.

The rename is a merge: 0004 stores Money as the running code has it, so a database
that reached 0004 with release 6's code or later already holds
``sampleshop.money.Money`` (and no ``sampleshop.models.Money`` at all), while one
migrated by releases 4 and 5 holds the old name. ``merge=True`` says both may be
there and become one class.
"""

import itertools

from dsustore import Validation

revision = "0006"
down_revision = "0005"

OLD = "sampleshop.models.Money"
NEW = "sampleshop.money.Money"
CACHE_BATCH = 5000


class AmountsAreMoney(Validation):
    """Every product price and order total is a ``sampleshop.money.Money``."""

    def execute(self, old_ns, new_ns):
        Validation.__init__(self)  # a retried patch validates again from scratch
        from sampleshop.money import Money

        root = new_ns.root
        amounts = itertools.chain(
            ((product, product.price) for product in root["products"].values()),
            ((order, order.total) for order in root["orders"].values()),
        )
        for count, (record, amount) in enumerate(amounts, 1):
            if type(amount) is not Money:
                self.flag(record)
            if count % CACHE_BATCH == 0:
                new_ns.connection.cacheGC()
        return self.flagged_count == 0


def upgrade(patch):
    patch.rename_class(OLD, NEW, merge=True)
    patch.add_validation(AmountsAreMoney())
