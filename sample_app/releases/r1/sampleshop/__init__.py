"""sampleshop, release 1: accounts, products, orders and login sessions kept in ZODB.

A deployed copy of the application's code. Importing the package imports its API,
so ``sys.modules["sampleshop.api"]`` is this release's once it is loaded.
"""

RELEASE = 1

from . import api, models  # noqa: E402  (after RELEASE, which api reads)

__all__ = ["RELEASE", "api", "models"]
