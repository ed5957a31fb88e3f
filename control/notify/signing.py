"""The generic webhook's signature: HMAC-SHA256 over `<timestamp>.<body>`, sent with the
timestamp and a delivery id, and the check a receiver runs (docs/notify.md copies it).

A forged body fails the HMAC; a replayed request fails the timestamp window, or,
inside it, the receiver's memory of delivery ids already seen.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, MutableMapping

TIMESTAMP_HEADER = "X-Superagent-Timestamp"
SIGNATURE_HEADER = "X-Superagent-Signature"
DELIVERY_HEADER = "X-Superagent-Delivery"
TOLERANCE_S = 300


class SignatureError(Exception):
    """The request is not what the sender signed, or was signed too long ago."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def headers(secret: bytes, body: bytes, delivery: str, now: float | None = None) -> dict[str, str]:
    """The three headers of one HTTP attempt (each attempt is signed afresh)."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: delivery,
    }


def verify(
    secret: bytes,
    body: bytes,
    got: Mapping[str, str],
    *,
    seen: MutableMapping[str, float] | None = None,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> str:
    """Check one request; return its delivery id or raise SignatureError.

    `got` is the request's headers (any case); `seen` remembers delivery ids for
    the tolerance window, so a captured request sent again inside it is refused.
    """
    lower = {k.lower(): v for k, v in got.items()}
    now = time.time() if now is None else now
    try:
        timestamp = int(lower[TIMESTAMP_HEADER.lower()])
        signature = lower[SIGNATURE_HEADER.lower()]
        delivery = lower[DELIVERY_HEADER.lower()]
    except (KeyError, ValueError):
        raise SignatureError("missing or malformed signature headers") from None
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance window (replayed or clock skew)")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise SignatureError("signature does not match the body")
    if seen is not None:
        for old in [d for d, at in seen.items() if now - at > 2 * tolerance_s]:
            del seen[old]
        if delivery in seen:
            raise SignatureError(f"delivery {delivery} already received (replayed)")
        seen[delivery] = now
    return delivery
