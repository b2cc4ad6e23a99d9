"""sampleshop, release 5: passwords are stored as salted hashes.

A deployed copy of the application's code. Importing the package imports its API,
so ``sys.modules["sampleshop.api"]`` is this release's once it is loaded.
"""

RELEASE = 5

from . import api, models, passwords  # noqa: E402  (after RELEASE, which api reads)

__all__ = ["RELEASE", "api", "models", "passwords"]
