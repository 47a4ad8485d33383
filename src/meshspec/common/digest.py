"""Short content digests: the tags, stamps and spec-hashes by which a deploy knows what changed."""

from __future__ import annotations

import hashlib
import json

LENGTH = 16  # hex digits: 64 bits, far beyond the number of things one mesh hashes


def digest_bytes(data: bytes, length: int = LENGTH) -> str:
    return hashlib.sha256(data).hexdigest()[:length]


def digest_text(text: str, length: int = LENGTH) -> str:
    return digest_bytes(text.encode(), length)


def digest(value: object) -> str:
    """Of a JSON-able value, independent of dict order (paths and the like as their str)."""
    return digest_text(json.dumps(value, sort_keys=True, default=str))
