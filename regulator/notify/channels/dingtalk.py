"""DingTalk (钉钉) custom robot with the "加签" security setting.

Per https://open.dingtalk.com/document/robots/customize-robot-security-settings: timestamp =
now in milliseconds; sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n
{secret}"))); both as query parameters next to access_token; the server refuses a timestamp more
than an hour off. Body per https://open.dingtalk.com/document/robots/custom-robot-access:
{"msgtype": "markdown", "markdown": {"title", "text"}}; success is {"errcode": 0} (a 200 with
errcode 310000 is a bad signature, 130101 rate limited).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from typing import Any

from .. import messages
from ..config import Channel
from .base import MESSAGE_ID_HEADER, Adapter, Outgoing, post, robot_ok


def sign(secret: str, timestamp_ms: int) -> str:
    mac = hmac.new(secret.encode(), ("%d\n%s" % (timestamp_ms, secret)).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class DingTalk(Adapter):
    def __init__(self, spec: Channel, http: Any, clock=time.time) -> None:
        self.name, self.http, self.clock = spec.name, http, clock
        self.timeout = spec.options.get("timeout_s", 10)
        self._secret = spec.secrets["secret"]
        self._url = spec.options["url"]
        if "token" in spec.secrets:
            sep = "&" if "?" in self._url else "?"
            self._url += sep + urllib.parse.urlencode({"access_token": spec.secrets["token"]})

    async def send(self, msg: Outgoing) -> str:
        ts = int(self.clock() * 1000)
        url = self._url + ("&" if "?" in self._url else "?") + urllib.parse.urlencode(
            {"timestamp": ts, "sign": sign(self._secret, ts)})  # fmt: skip
        body = {"msgtype": "markdown", "markdown": {
            "title": messages.plain(msg.body.get("title", ""), 100),
            "text": messages.markdown_of(msg.body)}}  # fmt: skip
        _, raw = await post(self.http, url, timeout=self.timeout, json_body=body,
                            headers={MESSAGE_ID_HEADER: msg.message_id})  # fmt: skip
        return robot_ok(raw, "dingtalk")
