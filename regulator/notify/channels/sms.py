"""SMS and voice through one generic HTTP provider adapter (docs/regulator.md, "SMS and voice").

The request shape is ours, documented, so any provider fits behind a small relay or natively:
POST <url>, Authorization: Bearer <token>, Idempotency-Key and X-GasGuard-Message-Id: the
message id, JSON {"message_id", "kind": "sms" | "voice", "to", "text", "title", "link"}. Any 2xx
whose JSON body is not {"ok": false} is accepted; 5xx, 408, 429 and timeouts are retried; any
other 4xx is refused for good (failed at once, audited). Voice reads the title and the first
lines: a call has no link to tap.
"""

from __future__ import annotations

import json
from typing import Any

from .. import messages
from ..config import Channel
from .base import MESSAGE_ID_HEADER, Adapter, Failed, Outgoing, post

SMS_MAX = 500  # characters: a long SMS is several; a provider splits


class Provider(Adapter):
    def __init__(self, spec: Channel, http: Any) -> None:
        self.name, self.kind, self.http = spec.name, spec.type, http
        self.url, self.timeout = spec.options["url"], spec.options.get("timeout_s", 10)
        self._token = spec.secrets.get("token")

    async def send(self, msg: Outgoing) -> str:
        text = messages.text_of(msg.body)
        if self.kind == "voice":
            text = "\n".join(str(msg.body.get("text", "")).split("\n")[:5])
        headers = {MESSAGE_ID_HEADER: msg.message_id, "Idempotency-Key": msg.message_id}
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        body = {"message_id": msg.message_id, "kind": self.kind, "to": msg.recipient,
                "text": text[:SMS_MAX], "title": msg.body.get("title", ""),
                "link": msg.body.get("link")}  # fmt: skip
        _, raw = await post(self.http, self.url, timeout=self.timeout, json_body=body,
                            headers=headers)  # fmt: skip
        try:
            reply = json.loads(raw) if raw.strip() else {}
        except ValueError:
            reply = {}
        if isinstance(reply, dict) and reply.get("ok") is False:
            raise Failed("%s refused: %s" % (self.kind, str(reply.get("error"))[:100]))
        return "%s ok" % self.kind
