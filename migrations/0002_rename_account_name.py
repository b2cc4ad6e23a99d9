"""Release 2: an account's ``name`` is called ``username``."""

revision = "0002"
down_revision = "0001"

ACCOUNT = "sampleshop.models.Account"


def upgrade(patch):
    patch.rename_field(ACCOUNT, "name", "username")


def downgrade(patch):
    patch.rename_field(ACCOUNT, "username", "name")
