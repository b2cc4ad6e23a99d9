"""Release 7: stored sessions are gone; login tokens are stateless, HMAC-signed strings.

The root loses its ``sessions`` container and gains the secret that signs tokens,
through a policy on the root (so a retried patch does it again). ``remove_class``
then has dsustore check that nothing live still references a Session; the
instances themselves are unreachable and go at the next pack. There is no
downgrade: the sessions are not kept.
"""

import secrets

from ZODB.utils import z64

from dsustore import MigrationPolicy, Validation

revision = "0007"
down_revision = "0006"

ROOT = "persistent.mapping.PersistentMapping"
SESSION = "sampleshop.models.Session"


class StatelessTokens(MigrationPolicy):
    """The root drops its sessions and keeps a secret for signing tokens instead."""

    def migrate(self, old, new, old_ns, new_ns):
        if old._p_oid != z64:  # another PersistentMapping, not the root
            return
        new.pop("sessions", None)
        if "token_secret" not in new:
            new["token_secret"] = secrets.token_bytes(32)


class NoSessionLeft(Validation):
    """The root keeps no sessions container and every login can be signed.

    That no live object references a session any more is dsustore's own
    ``remove_class`` validation.
    """

    def execute(self, old_ns, new_ns):
        root = new_ns.root
        return "sessions" not in root and len(root.get("token_secret", b"")) >= 32


def upgrade(patch):
    patch.migrate_instances(ROOT, StatelessTokens())
    patch.remove_class(SESSION)
    patch.add_validation(NoSessionLeft())
