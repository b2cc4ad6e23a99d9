"""sampleshop, release 6: Money has a module of its own.

A deployed copy of the application's code. Importing the package imports its API,
so ``sys.modules["sampleshop.api"]`` is this release's once it is loaded.
"""

RELEASE = 6

from . import api, models, money, passwords  # noqa: E402  (after RELEASE, which api reads)

__all__ = ["RELEASE", "api", "models", "money", "passwords"]
