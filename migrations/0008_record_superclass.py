"""Release 8: products and orders derive from a new common superclass, ``Record``.

``Record`` declares ``created``. An order's ``placed`` time becomes its
``created``; a product never recorded its creation, so it gets the time of the
transaction that last stored it, the earliest the data can tell. dsustore checks
that every instance ends with the fields ``Record`` declares.
"""

from ZODB.TimeStamp import TimeStamp

revision = "0008"
down_revision = "0007"

RECORD = "sampleshop.models.Record"
PRODUCT = "sampleshop.models.Product"
ORDER = "sampleshop.models.Order"


def last_stored(old, new, old_ns, new_ns):
    """``created`` for a product: when it was last stored before the update."""
    stored = old_ns.get(old._p_oid)
    stored._p_activate()
    new.created = TimeStamp(stored._p_serial).timeTime()


def upgrade(patch):
    patch.add_class(RECORD)
    patch.change_superclass(PRODUCT, RECORD, policy=last_stored)
    patch.rename_field(ORDER, "placed", "created")
    patch.change_superclass(ORDER, RECORD)
