"""Release 5: passwords are stored as salted PBKDF2 hashes, no longer in plain text.

Each account gets a random salt (inside its ``password_hash``) and loses its
``password``. The application validation logs every account in, through the
code's own ``check_password``, with the plain password read from the old state:
an account that could not log in any more refuses the update. There is no
downgrade: a hash cannot give the password back.
"""

from dsustore import Validation, policies

revision = "0005"
down_revision = "0004"

ACCOUNT = "sampleshop.models.Account"
#: how many accounts the validation checks between freeing the connections' caches
CACHE_BATCH = 5000


def hashed(old):
    """The salted hash of the account's plain password, made by the running code."""
    from sampleshop import passwords

    return passwords.hash_password(old.password)


class EveryAccountCanLogIn(Validation):
    """Every account logs in with the password it had before the update."""

    def execute(self, old_ns, new_ns):
        Validation.__init__(self)  # a retried patch validates again from scratch
        old_accounts = old_ns.root["accounts"]
        for count, (username, account) in enumerate(new_ns.root["accounts"].items(), 1):
            if not account.check_password(old_accounts[username].password):
                self.flag(account)
            if count % CACHE_BATCH == 0:
                old_ns.connection.cacheGC()
                new_ns.connection.cacheGC()
        return self.flagged_count == 0


def upgrade(patch):
    patch.add_field(ACCOUNT, "password_hash", policies.compute(hashed))
    patch.remove_field(ACCOUNT, "password")
    patch.add_validation(EveryAccountCanLogIn())
