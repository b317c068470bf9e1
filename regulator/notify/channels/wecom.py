"""WeCom (企业微信) group robot: POST markdown to the webhook with the robot's key in the URL.

Per https://developer.work.weixin.qq.com/document/path/91770 ("群机器人配置说明"): POST
https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY, {"msgtype": "markdown", "markdown":
{"content": ...}} (content at most 4096 bytes); success is HTTP 200 with {"errcode": 0}: a 200
with another errcode (93000 bad key, 45009 rate limited) is a failure.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from .. import messages
from ..config import Channel
from .base import MESSAGE_ID_HEADER, Adapter, Outgoing, post, robot_ok

MAX_CONTENT = 4096


class WeCom(Adapter):
    def __init__(self, spec: Channel, http: Any) -> None:
        self.name, self.http = spec.name, http
        self.timeout = spec.options.get("timeout_s", 10)
        url = spec.options["url"]
        if "key" in spec.secrets:
            sep = "&" if "?" in url else "?"
            url += sep + urllib.parse.urlencode({"key": spec.secrets["key"]})
        self._url = url

    async def send(self, msg: Outgoing) -> str:
        content = messages.markdown_of(msg.body)
        while len(content.encode()) > MAX_CONTENT:
            content = content[: len(content) * 9 // 10]
        _, raw = await post(self.http, self._url, timeout=self.timeout,
                            json_body={"msgtype": "markdown", "markdown": {"content": content}},
                            headers={MESSAGE_ID_HEADER: msg.message_id})  # fmt: skip
        return robot_ok(raw, "wecom")
