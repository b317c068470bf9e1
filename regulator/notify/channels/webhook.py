"""The upper platform's webhook: the forward payload as signed JSON (regulator/notify/forward.py).

Headers (docs/regulator.md, "Forwarding"): X-GasGuard-Message-Id (dedupe), X-GasGuard-Timestamp
(Unix seconds; a receiver refuses one more than 5 minutes off, against replay),
X-GasGuard-Signature: "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body), and/or
X-GasGuard-Signature-Ed25519: base64 Ed25519 signature of the same bytes with
X-GasGuard-Key-Id naming the key. The body is sent byte for byte as signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from ..config import Channel
from .base import MESSAGE_ID_HEADER, Adapter, Outgoing, post


def signed_bytes(timestamp: int, body: bytes) -> bytes:
    return b"%d." % timestamp + body


def hmac_header(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), signed_bytes(timestamp, body), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Forward(Adapter):
    def __init__(self, spec: Channel, http: Any, clock=time.time) -> None:
        self.name, self.http, self.clock = spec.name, http, clock
        self.url, self.timeout = spec.options["url"], spec.options.get("timeout_s", 10)
        self.key_id = spec.options.get("key_id", "")
        self._hmac = spec.secrets.get("hmac_secret")
        self._ed = None
        if "ed25519_key" in spec.secrets:
            from gasguard.protocol import record

            self._ed = record.load_private(spec.secrets["ed25519_key"].encode())

    async def send(self, msg: Outgoing) -> str:
        body = json.dumps(msg.body["payload"], ensure_ascii=False, sort_keys=True,
                          separators=(",", ":")).encode()  # fmt: skip
        ts = int(self.clock())
        headers = {MESSAGE_ID_HEADER: msg.message_id, "X-GasGuard-Timestamp": str(ts),
                   "Content-Type": "application/json; charset=utf-8"}  # fmt: skip
        if self._hmac:
            headers["X-GasGuard-Signature"] = hmac_header(self._hmac, ts, body)
        if self._ed is not None:
            sig = self._ed.sign(signed_bytes(ts, body))
            headers["X-GasGuard-Signature-Ed25519"] = base64.b64encode(sig).decode()
            headers["X-GasGuard-Key-Id"] = self.key_id
        await post(self.http, self.url, timeout=self.timeout, data=body, headers=headers)
        return "forward ok"
