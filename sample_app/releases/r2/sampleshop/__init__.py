"""sampleshop, release 2: accounts log in with a ``username``.

A deployed copy of the application's code. Importing the package imports its API,
so ``sys.modules["sampleshop.api"]`` is this release's once it is loaded.
"""

RELEASE = 2

from . import api, models  # noqa: E402  (after RELEASE, which api reads)

__all__ = ["RELEASE", "api", "models"]
