"""API key material: generation, hashing, the display prefix, constant-time comparison.

A key is ``mh-`` followed by 32 random bytes (urlsafe base64, 43 characters). The
database keeps only its SHA-256 and its first characters; the first characters also
find the candidate rows, whose hashes are then compared in constant time. A key is a
secret: nothing here logs it, and nothing else should.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["KEY_PREFIX", "display_prefix", "generate_key", "hash_key", "hashes_match"]

KEY_PREFIX = "mh-"
# "mh-" + 9 random characters: 54 bits, so a lookup by prefix finds one row, yet far
# too little of the key's 256 bits to help anyone guess the rest.
_DISPLAY_LENGTH = len(KEY_PREFIX) + 9


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # A fast hash is right for 256 random bits: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:_DISPLAY_LENGTH]


def hashes_match(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key).encode(), stored_hash.encode())
