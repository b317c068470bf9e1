"""Feishu / Lark (飞书) custom bot with signature verification.

Per https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot ("签名校验"): timestamp =
now in seconds (a string); sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")),
both in the JSON body next to msg_type and content; the server allows an hour of skew. Success
is {"code": 0} (older deployments: {"StatusCode": 0}); 19021 is a bad signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from .. import messages
from ..config import Channel
from .base import MESSAGE_ID_HEADER, Adapter, Failed, Outgoing, json_reply, post


def sign(secret: str, timestamp_s: int) -> str:
    key = ("%d\n%s" % (timestamp_s, secret)).encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class Feishu(Adapter):
    def __init__(self, spec: Channel, http: Any, clock=time.time) -> None:
        self.name, self.http, self.clock = spec.name, http, clock
        self.timeout = spec.options.get("timeout_s", 10)
        self._secret, self._url = spec.secrets["secret"], spec.options["url"]

    async def send(self, msg: Outgoing) -> str:
        ts = int(self.clock())
        body = {"timestamp": str(ts), "sign": sign(self._secret, ts), "msg_type": "text",
                "content": {"text": messages.text_of(msg.body)}}  # fmt: skip
        _, raw = await post(self.http, self._url, timeout=self.timeout, json_body=body,
                            headers={MESSAGE_ID_HEADER: msg.message_id})  # fmt: skip
        reply = json_reply(raw)
        code = reply.get("code", reply.get("StatusCode"))
        if code != 0:
            raise Failed("feishu code %s: %s" % (code, str(reply.get("msg"))[:100]))
        return "feishu ok"
