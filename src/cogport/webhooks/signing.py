"""Standard Webhooks signatures, as Replicate signs its webhooks.

The signed content is ``f"{id}.{timestamp}.{body}"``; the key is the base64-decoded part of the
``whsec_...`` secret after the underscore; the header is ``v1,<base64 HMAC-SHA256>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": "cogport-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret, message_id, ts, body),
    }
