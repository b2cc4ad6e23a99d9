"""Where the bookkeeping class lived in dsustore 0.1: databases written then name it here.

ZODB records name their class by module, so this name must keep importing for as
long as such databases exist; new records name :mod:`dsustore.engine.bookkeeping`.
"""

from __future__ import annotations

from .engine.bookkeeping import Bookkeeping

__all__ = ["Bookkeeping"]
