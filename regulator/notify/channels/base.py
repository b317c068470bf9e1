"""What every adapter shares: the message handed to it, the failure it raises, a careful POST.

A receiver is untrusted: it may answer 500, never answer, trickle bytes (a slow loris: the
whole exchange has one deadline), redirect (not followed: a webhook that moved is a config
error, and following could send a signed message elsewhere), or answer with megabytes (only
MAX_RESPONSE bytes are read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_RESPONSE = 64 * 1024
MESSAGE_ID_HEADER = "X-GasGuard-Message-Id"  # the same for every attempt: receivers dedupe


@dataclass(frozen=True)
class Outgoing:
    key: str
    message_id: str
    channel: str
    recipient: str
    kind: str
    site: str | None
    body: dict[str, Any]
    attempt: int


class Failed(Exception):
    """Not delivered. retry=False: the receiver refused it for good (a 4xx): give up now."""

    def __init__(self, detail: str, retry: bool = True) -> None:
        super().__init__(detail)
        self.detail, self.retry = detail, retry


class Adapter:
    name = ""

    async def send(self, msg: Outgoing) -> str:
        """Deliver or raise Failed; returns a short detail for the attempt's row."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def post(http: Any, url: str, *, timeout: float, json_body: Any = None,
               data: bytes | None = None, headers: dict[str, str] | None = None,
               ) -> tuple[int, bytes]:  # fmt: skip
    import asyncio

    import aiohttp

    hdrs = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body, ensure_ascii=False).encode()
        hdrs.setdefault("Content-Type", "application/json; charset=utf-8")
    try:
        async with asyncio.timeout(timeout):
            async with http.post(url, data=data, headers=hdrs, allow_redirects=False) as r:
                status, body = r.status, b""
                while len(body) < MAX_RESPONSE:  # to its end, or MAX_RESPONSE bytes
                    chunk = await r.content.read(MAX_RESPONSE - len(body))
                    if not chunk:
                        break
                    body += chunk
    except TimeoutError:
        raise Failed("timeout after %.1f s" % timeout) from None
    except aiohttp.ClientError as e:
        raise Failed("%s: %s" % (type(e).__name__, str(e)[:200])) from None
    if 300 <= status < 400:
        raise Failed("HTTP %d: a redirect (not followed; check the URL)" % status)
    if status >= 400:
        retry = status >= 500 or status in (408, 425, 429)
        raise Failed("HTTP %d: %s" % (status, body[:200].decode(errors="replace")), retry)
    return status, body


def json_reply(body: bytes) -> dict[str, Any]:
    try:
        v = json.loads(body)
    except ValueError:
        raise Failed("a 2xx without JSON: %r" % body[:100]) from None
    if not isinstance(v, dict):
        raise Failed("a 2xx whose JSON is not an object")
    return v


def robot_ok(raw: bytes, robot: str) -> str:
    """A chat robot's answer: HTTP 200 with {"errcode": 0} (WeCom, DingTalk); anything else is
    a failure retried (their 200s carry errors: a bad signature, a rate limit)."""
    reply = json_reply(raw)
    if reply.get("errcode") != 0:
        raise Failed("%s errcode %s: %s" % (robot, reply.get("errcode"),
                                             str(reply.get("errmsg"))[:100]))  # fmt: skip
    return "%s ok" % robot
