"""Salted password hashes: PBKDF2-HMAC-SHA256, stored as one self-describing string.

A hash reads ``pbkdf2_sha256$<iterations>$<salt hex>$<digest hex>``: the salt is
random per password and the iteration count travels with it, so it can be raised
later without breaking the passwords already stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os

ALGORITHM = "pbkdf2_sha256"
#: Deliberately low for the demo: the release 5 migration hashes every account once
#: and its validation checks every login once more, and 200 rounds keep that to a
#: couple of seconds for 20,000 accounts. A real deployment uses hundreds of
#: thousands of rounds (OWASP advises 600,000 for PBKDF2-HMAC-SHA256).
ITERATIONS = 200
SALT_BYTES = 16


def password_bytes(password: str) -> bytes:
    """The UTF-8 of ``password``; a lone surrogate, which UTF-8 cannot encode, kept as is.

    Releases 1 to 4 stored plain passwords unchecked, so one may hold a lone
    surrogate (JSON ``"\\ud800"``): it hashes and checks all the same rather
    than failing the migration, or the login, with UnicodeEncodeError. Text
    encodes exactly as before, so no stored hash changes.
    """
    return password.encode("utf-8", "surrogatepass")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The stored form of ``password``, with a fresh random salt unless one is given."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password_bytes(password), salt, iterations)
    return f"{ALGORITHM}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from."""
    try:
        algorithm, iterations, salt, digest = stored.split("$")
        if algorithm != ALGORITHM:
            return False
        candidate = hashlib.pbkdf2_hmac("sha256", password_bytes(password), bytes.fromhex(salt),
                                        int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)
