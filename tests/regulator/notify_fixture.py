"""Real local receivers for the notify tests: an aiohttp server standing in for each robot
webhook, the SMS/voice provider and the upper platform (its own thread and event loop), an
aiosmtpd SMTP server, and the deliverer run in a thread of its own."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gasguard.regulator.notify import config
from gasguard.regulator.notify.deliver import Deliverer
from gasguard.regulator.store import open_store


@dataclass
class Got:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Receiver:
    """Every request kept; `mode` says how to answer: ok | fail | errcode | redirect | huge |
    slow | refuse | hold (takes the message, answers after `hold_s`)."""

    mode: str = "ok"
    hold_s: float = 0.0
    got: list[Got] = field(default_factory=list)
    port: int = 0
    closing: bool = False

    def url(self, path: str = "/hook") -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def dedup(self) -> dict[str, Got]:
        """The receiver's view: one message per X-GasGuard-Message-Id."""
        out: dict[str, Got] = {}
        for g in self.got:
            out.setdefault(g.headers.get("X-GasGuard-Message-Id", ""), g)
        return out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        mode = self.mode
        if mode == "fail":
            self.got.append(Got(request.path, dict(request.query), dict(request.headers), raw,
                                time.time()))  # fmt: skip
            return web.Response(status=500, text="down")
        if mode == "slow":  # headers, then a byte a second: a slow loris
            resp = web.StreamResponse(status=200)
            await resp.prepare(request)
            for _ in range(60):
                if self.closing:
                    break
                await resp.write(b" ")
                await asyncio.sleep(1)
            return resp
        self.got.append(Got(request.path, dict(request.query), dict(request.headers), raw,
                            time.time()))  # fmt: skip
        if mode == "errcode":
            return web.json_response({"errcode": 310000, "errmsg": "sign not match", "code": 1})
        if mode == "redirect":
            return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/x"})
        if mode == "huge":
            return web.Response(status=200, body=b"x" * (8 << 20))
        if mode == "refuse":
            return web.Response(status=400, text="bad request")
        if mode == "hold":
            end = time.monotonic() + self.hold_s
            while time.monotonic() < end and not self.closing:
                await asyncio.sleep(0.1)
        return web.json_response({"errcode": 0, "errmsg": "ok", "code": 0, "ok": True})


class Server:
    """An aiohttp server on 127.0.0.1 in its own thread, serving a Receiver."""

    def __init__(self, receiver: Receiver) -> None:
        self.r = receiver
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("POST", "/{tail:.*}", self.r.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.r.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> Receiver:
        self.thread.start()
        self.ready.wait(10)
        return self.r

    def __exit__(self, *a: Any) -> None:
        self.r.closing = True
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Mailbox:
    """aiosmtpd on 127.0.0.1: every message kept as (envelope to, parsed message)."""

    def __init__(self) -> None:
        self.got: list[tuple[list[str], Any]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        import email
        import email.policy

        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.got.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


class Smtp:
    def __enter__(self) -> tuple[Mailbox, int]:
        from aiosmtpd.controller import Controller

        from gasguard.tools.sim.brokers import free_port

        self.box = Mailbox()
        self.port = free_port()
        self.c = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.c.start()
        return self.box, self.port

    def __exit__(self, *a: Any) -> None:
        self.c.stop()


class Running:
    """A Deliverer on its own thread and loop, until the with block ends."""

    def __init__(self, db: str, cfg: config.Config, **kw: Any) -> None:
        pg = db if db.startswith("postgres") else None
        self.d = Deliverer(lambda: open_store(db), cfg, log=lambda s: None, postgres_url=pg, **kw)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.d.run(self.stop))

    def __enter__(self) -> Deliverer:
        self.thread.start()
        return self.d

    def __exit__(self, *a: Any) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def wait(pred, timeout: float = 20.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("not within %.0f s" % timeout)
        time.sleep(step)
