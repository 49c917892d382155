"""API key material: generation, hashing, the display prefix, constant-time comparison.

A tenant key is ``mh-``, an admin token ``mha-``, followed by 32 random bytes (urlsafe
base64, 43 characters). The
database keeps only its SHA-256 and its first characters; the first characters also
find the candidate rows, whose hashes are then compared in constant time. A key is a
secret: nothing here logs it, and nothing else should.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "ADMIN_TOKEN_PREFIX",
    "KEY_PREFIX",
    "display_prefix",
    "generate_key",
    "hash_key",
    "hashes_match",
    "named_by",
]

KEY_PREFIX = "mh-"
ADMIN_TOKEN_PREFIX = "mha-"
# The kind's prefix + 9 random characters: 54 bits, so a lookup by prefix finds one row,
# yet far too little of the key's 256 bits to help anyone guess the rest.
_RANDOM_SHOWN = 9


def generate_key(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # A fast hash is right for 256 random bits: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    kind = ADMIN_TOKEN_PREFIX if key.startswith(ADMIN_TOKEN_PREFIX) else KEY_PREFIX
    return key[: len(kind) + _RANDOM_SHOWN]


def hashes_match(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key).encode(), stored_hash.encode())


def named_by(ref: int | str, table: Table, hash_column: str) -> ColumnElement[bool]:
    """The rows of ``table`` that ``ref`` names, as operators name a key or token: its id,
    its display prefix, or the whole secret (looked up by hash, never stored)."""
    ref = str(ref)
    if ref.isdigit():
        return table.c.id == int(ref)
    if len(ref) > len(display_prefix(ref)):
        return table.c[hash_column] == hash_key(ref)
    return table.c.prefix == ref
