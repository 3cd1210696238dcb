"""Job callbacks: the final status POSTed to the caller's URL, signed with HMAC-SHA256.

The signature header reads `t=<unix time>,v1=<hex>`, where the hex is
HMAC-SHA256(secret, "<t>." + body). Receivers recompute it, compare in constant time,
and refuse old timestamps, so a captured callback cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from common.errors import CallbackFailed, InvalidInput

SIGNATURE_HEADER = "X-Serving-Signature"


def check_callback_url(url: Any) -> str:
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise InvalidInput("callback_url must be an absolute http:// or https:// URL")
    if len(url) > 2048:
        raise InvalidInput("callback_url is longer than 2048 characters")
    return str(url)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def deliver(url: str, body: bytes, secret: str, timeout: float = 10) -> int:
    """POST the body; the receiver's status on 2xx, CallbackFailed otherwise."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            "User-Agent": "model-serving-callback/1",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise CallbackFailed(f"callback to {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CallbackFailed(f"callback to {url} failed: {exc}") from None
