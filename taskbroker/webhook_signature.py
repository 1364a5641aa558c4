"""Signing webhook deliveries, and the check a receiver runs (importable by Python receivers).

The header is ``X-Taskbroker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, the HMAC keyed
with TASKBROKER_WEBHOOK_SECRET over ``"<t>." + body``. Signing the timestamp with the body lets a
receiver refuse a replayed old delivery; the ``v1`` label leaves room to change the scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Taskbroker-Signature"
DELIVERY_HEADER = "X-Taskbroker-Delivery"
ATTEMPT_HEADER = "X-Taskbroker-Attempt"
DEFAULT_TOLERANCE = 300.0


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header's value for ``body`` sent now (or at ``timestamp``)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={_digest(secret, at, body)}"


def verify(
    secret: bytes, header: str, body: bytes, *, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and was made within ``tolerance`` s of now."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(fields.get("v1", ""), _digest(secret, timestamp, body))
