"""Release 3: every account has an email address, made from its username."""

from dsustore import policies

revision = "0003"
down_revision = "0002"

ACCOUNT = "sampleshop.models.Account"
EMAIL_DOMAIN = "shop.example"


def email_of(old):
    """The address release 3 gives an account: its username at the shop's domain."""
    return f"{old.username.lower()}@{EMAIL_DOMAIN}"


def upgrade(patch):
    patch.add_field(ACCOUNT, "email", policies.compute(email_of))


def downgrade(patch):
    patch.remove_field(ACCOUNT, "email")
