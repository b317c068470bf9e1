"""Device links: the protocol that carries one link's bytes to the gateway (a TCP connection or
a serial port), and the serial port's open-and-reopen loop."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import serial_asyncio_fast

from .config import SerialLink

if TYPE_CHECKING:
    from .service import Gateway

log = logging.getLogger("gasguard.gateway")

LINK_READ = 2048  # bytes per turn of a link: short turns, so no link holds the loop for long
SERIAL_BACKOFF_MIN_S = 0.5  # a serial port that will not open is tried again after this,
SERIAL_BACKOFF_MAX_S = 10.0  # doubling up to this
SERIAL_REOPEN_S = 0.5  # a serial link that closed is opened again after this


class LinkProtocol(asyncio.BufferedProtocol):
    """One device link (a TCP connection or a serial port): bytes -> session -> Gateway.handle,
    in the event loop's read callback itself (no stream and task in between: under load each
    of those hops waited for a turn of the loop, and an alarm made several), LINK_READ bytes
    at most per read so that no link holds the loop for long. Reading pauses while the
    committer is full. A TCP link must carry a valid frame (one its session accepts) within
    hello_s, and one that carries none for idle_s is closed (bytes that are not valid frames,
    recorded frames included, do not count: gateway/links.py)."""

    _buf = bytearray(LINK_READ)  # shared: every read is consumed at once, on the one loop

    def __init__(
        self, gw: Gateway, name: str, idle_s: float | None, hello_s: float | None = None
    ) -> None:
        self.gw = gw
        self.name = name
        self.idle_s = idle_s
        self.hello_s = hello_s
        self.session = gw.session()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.valid_at = 0.0  # when it last carried a valid frame
        self.devices: set[str] = set()
        self._opened = time.monotonic()
        self._idle: asyncio.TimerHandle | None = None
        self._reason = "closed by peer"

    @property
    def tcp(self) -> bool:
        return self.name.startswith("tcp")

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if self.name == "tcp" and peer:
            self.name = "tcp:%s:%s" % (peer[0], peer[1])
        self.gw.links_up[self.name] = True
        if self.tcp:
            self.gw.links.opened(self)
        first = self.hello_s if self.hello_s is not None else self.idle_s
        if first is not None:
            self._idle = asyncio.get_running_loop().call_later(first, self._check_idle)

    def shed(self, reason: str) -> None:
        """Closed by the connection policy (gateway/links.py)."""
        self._reason = "shed: " + reason
        if self.transport is not None:
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:  # TCP: read into our LINK_READ buffer
        self._feed(bytes(memoryview(self._buf)[:nbytes]))

    def data_received(self, data: bytes) -> None:  # serial transports call this one
        self._feed(bytes(data))

    def _feed(self, data: bytes) -> None:
        gw = self.gw
        session = self.session
        try:
            msgs = session.feed(data)
        except Exception as e:  # noqa: BLE001 - a bug must not take the link, or the loop, down
            gw.frames["error"] += 1
            log.exception("link input not handled", extra={"link": self.name, "error": repr(e)})
            msgs = []
        if self.transport is None:
            return
        if session.valid_at > self.valid_at:
            self.valid_at = session.valid_at
            if len(session.devices_seen) > len(self.devices):
                for d in session.devices_seen - self.devices:
                    self.devices.add(d)
                    if self.tcp:
                        gw.links.seen(self, d)
                if self.transport is None:
                    return
        if session.replies:  # the handshake's time frames
            self.transport.write(session.take_replies())
        if msgs:
            gw.handle(session, msgs, self.transport.write)
        gw.committer.finish()  # commits that ended meanwhile: publish, acknowledge
        if not gw.committer.has_room() and self.transport is not None:
            self.transport.pause_reading()
            asyncio.ensure_future(self._resume())

    async def _resume(self) -> None:
        await self.gw.committer.room()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _check_idle(self) -> None:
        if self.transport is None:
            return
        now = time.monotonic()
        if not self.valid_at:  # no valid frame since it opened
            if self.hello_s is not None:
                self._reason = "no valid frame within %.0f s" % self.hello_s
                self.transport.abort()
                return
            deadline = self._opened + (self.idle_s or 0)
        else:
            deadline = self.valid_at + (self.idle_s or 0)
        if self.idle_s is not None and deadline <= now:
            self._reason = "idle: no valid frame for %.0f s" % self.idle_s
            self.transport.abort()
            return
        if self.idle_s is not None:
            self._idle = asyncio.get_running_loop().call_later(deadline - now, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        reason = type(exc).__name__ if exc is not None else self._reason
        log.info("link closed", extra={"link": self.name, "reason": reason})
        if self.tcp:
            self.gw.links_up.pop(self.name, None)
            self.gw.links.closed(self)
        else:
            self.gw.links_up[self.name] = False
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)


async def serial_link(gw: Gateway, link: SerialLink) -> None:
    """Keep a serial port open for ever: reopened after it closes, retried with a backoff while
    it cannot be opened (a USB adapter unplugged)."""
    name = "serial:%s" % link.port
    backoff = SERIAL_BACKOFF_MIN_S
    loop = asyncio.get_running_loop()
    while True:
        try:
            _, proto = await serial_asyncio_fast.create_serial_connection(
                loop, lambda: LinkProtocol(gw, name, None), link.port, baudrate=link.baud
            )
        except (OSError, ValueError) as e:
            gw.links_up[name] = False
            log.warning("serial port unavailable", extra={"port": link.port, "error": str(e)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, SERIAL_BACKOFF_MAX_S)
            continue
        backoff = SERIAL_BACKOFF_MIN_S
        log.info("serial link open", extra={"port": link.port, "baud": link.baud})
        await proto.closed
        await asyncio.sleep(SERIAL_REOPEN_S)
