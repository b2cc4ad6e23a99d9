"""dsustore's own transactions: how they are marked, and how they are told apart.

Every transaction dsustore commits (a migration, a lock lease, a snapshot record,
a restore) carries a ``"dsustore"`` key in its extension and a description that
starts with ``dsustore``. The stale-code guard lets those through, a restore does
not count them as the application's writes, and the runner finds a migration's
transaction by them.
"""

from __future__ import annotations

from typing import Any

#: the transaction extension key that marks a transaction as written by dsustore
TRANSACTION_MARK = "dsustore"


def mark(txn: Any, note: str, **facts: Any) -> None:
    """Describe ``txn`` as dsustore's: ``note`` as its description, ``facts`` in its extension."""
    txn.note(note)
    txn.setExtendedInfo(TRANSACTION_MARK, facts)


def extension_of(txn: Any) -> dict[str, Any]:
    """The extension of a transaction, from a live transaction or a storage's transaction record."""
    ext = getattr(txn, "extension", None)
    if ext is None:
        ext = getattr(txn, "_extension", None)  # a storage's record, before ZODB 5.x named it
    return ext if isinstance(ext, dict) else {}


def marks_of(txn: Any) -> dict[str, Any]:
    """The facts dsustore put into ``txn``'s extension ({} for other transactions)."""
    found = extension_of(txn).get(TRANSACTION_MARK)
    return found if isinstance(found, dict) else {}


def is_dsustore(txn: Any) -> bool:
    """Whether dsustore wrote ``txn``: its extension mark, or a ``dsustore ...`` description."""
    if TRANSACTION_MARK in extension_of(txn):
        return True
    description = getattr(txn, "description", b"") or b""
    if isinstance(description, str):
        description = description.encode("utf-8")
    return description.startswith(b"dsustore ")
