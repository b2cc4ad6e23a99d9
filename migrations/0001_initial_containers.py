"""Release 1: the root containers of accounts, products, orders and sessions.

The containers are added by a policy on the root object rather than through
``patch.new_ns.root`` directly, so that a patch retried after a conflict adds them
again. Nothing here names a class of the application: the classes of release 1
need not exist in the code that runs this script.
"""

from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree
from ZODB.utils import z64

from dsustore import MigrationPolicy

revision = "0001"
down_revision = None

#: the class of the ZODB root object
ROOT = "persistent.mapping.PersistentMapping"
CONTAINERS = {"accounts": OOBTree, "products": OOBTree, "orders": LOBTree, "sessions": OOBTree}


class AddContainers(MigrationPolicy):
    """Give the root each container it lacks."""

    def migrate(self, old, new, old_ns, new_ns):
        if old._p_oid != z64:  # another PersistentMapping, not the root
            return
        for key, make in CONTAINERS.items():
            if key not in new:
                new[key] = make()


def upgrade(patch):
    patch.migrate_instances(ROOT, AddContainers())
