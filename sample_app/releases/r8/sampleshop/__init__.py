"""sampleshop, release 8: products and orders are Records with a creation time.

A deployed copy of the application's code. Importing the package imports its API,
so ``sys.modules["sampleshop.api"]`` is this release's once it is loaded.
"""

RELEASE = 8

from . import api, models, money, passwords, tokens  # noqa: E402  (after RELEASE, which api reads)

__all__ = ["RELEASE", "api", "models", "money", "passwords", "tokens"]
