"""A synthetic device: speaks the device side of the link protocol (v2) from CPython, for gateway
tests and benchmarks where hundreds of boards are needed (the firmware itself is tested on the
real MicroPython VM elsewhere). It does the board's side of the session handshake as
docs/protocol.md describes it and the firmware does:

- without a confirmed gateway session it sends births with a fresh `nonce` (at connect, and when
  a frame comes from another gateway boot), no heartbeats or events;
- a `time` frame for its boot that echoes its nonce confirms the gateway session: its header
  (boot, seq) anchors the window for that gateway's frames, and the board re-sends its
  unacknowledged events at once (after a birth echoing `gn`, if the frame carried one);
- a `time` frame with a challenge `gn` is answered with a birth echoing it (with a new nonce if
  the board has no session with that gateway boot), then the unacknowledged events;
- acks count only inside the confirmed gateway session.

Events are kept until acknowledged. A load generator can sign its events ahead (prepare()): a few
frame numbers are kept free before them for the handshake's births, so the births signed at
connect time do not force the prepared frames to be signed again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import deque
from typing import Any

from gasguard.gateway.session import ReplayWindow
from gasguard.protocol import frame, messages
from gasguard.protocol.auth import Signer

DETS = [{"addr": 1, "gas": "methane", "profile": "generic-x10"}]
SPARE_SEQS = 8  # frame numbers kept free ahead of prepared events for handshake births


class SynDevice:
    def __init__(self, device: str, key: bytes, boot: int = 1, inst: str | None = None) -> None:
        self.device = device
        self.signer = Signer(key)
        self.boot = boot
        self.inst = inst or secrets.token_hex(8)
        self.seq = 0  # frame sequence (header)
        self.event_seq = 0
        self.unacked: dict[tuple[int, int], dict] = {}  # id -> event body, in order
        self.acked: set[tuple[int, int]] = set()
        self.time_synced = False
        self.decoder = frame.FrameDecoder({device: self.signer}.get)
        self.sent_at: dict[tuple[int, int], float] = {}
        # prepared, unsent: (id, body, frame, its frame seq)
        self.queue: deque[tuple[tuple[int, int], dict, bytes, int]] = deque()
        self.wire_seq = 0  # highest frame seq put on the wire: the gateway refuses older ones
        self._spare: deque[int] = deque()  # free frame seqs below the prepared ones
        # the handshake
        self.nonce: bytes | None = None  # outstanding challenge to the gateway
        self.gw_boot: int | None = None  # the confirmed gateway session's boot
        self.gw_window: ReplayWindow | None = None
        self.confirmations = 0
        self.out: list[bytes] = []  # frames the handshake wants sent, in order

    @property
    def linked(self) -> bool:
        """A confirmed gateway session: events may flow."""
        return self.gw_boot is not None

    def _next_seq(self) -> int:
        while self._spare and self._spare[0] <= self.wire_seq:
            self._spare.popleft()
        if self._spare:
            return self._spare.popleft()
        self.seq += 1
        return self.seq

    def _frame(self, mtype: int, body: dict[str, Any], wire: bool = True) -> bytes:
        seq = self._next_seq() if wire else self._reserve()
        if wire:
            self.wire_seq = max(self.wire_seq, seq)
        return messages.pack(self.signer, mtype, self.boot, seq, self.device, body)

    def _reserve(self) -> int:
        self.seq += 1
        return self.seq

    def birth(self, gn: bytes | None = None, nonce: bool = True) -> bytes:
        """A birth; with a nonce (a new one unless one is outstanding) unless told otherwise."""
        if nonce and self.nonce is None:
            self.nonce = os.urandom(messages.NONCE_LEN)
        body = messages.birth(
            self.device, self.inst, "0.1.0", "synthetic", "power", "nc", DETS,
            nonce=self.nonce if nonce else None, gn=gn,
        )  # fmt: skip
        return self._frame(messages.BIRTH, body)

    def link_down(self) -> None:
        """The link dropped: the gateway session is no longer confirmed (a birth asks anew)."""
        self.gw_boot = self.gw_window = self.nonce = None

    def heartbeat(
        self,
        valve: str = "open",
        alarm: str = "none",
        lel: float | int = 0.0,
        lost: int = 0,
        state: str = "ok",
    ) -> bytes:
        loop = {"period_ms": 20, "mean_us": 900, "max_us": 2100, "overruns": 0}
        dets = [{"state": state, "lel": lel, "errors": 0}]
        return self._frame(
            messages.HEARTBEAT,
            messages.heartbeat(60, valve, alarm, loop, 60000, len(self.unacked), dets, lost=lost),
        )

    def event(self, kind: str, **fields: Any) -> tuple[tuple[int, int], bytes]:
        """A new event: its id and its frame. It stays unacked until the gateway says so."""
        self.event_seq += 1
        eid = (self.boot, self.event_seq)
        body = messages.event(self.boot, self.event_seq, kind, 60, **fields)
        self.unacked[eid] = body
        self.sent_at[eid] = time.perf_counter()
        return eid, self._frame(messages.EVENT, body)

    def prepare(self, n: int, kinds: tuple[str, ...] = ("alarm.low", "alarm.clear")) -> None:
        """Encode n events ahead (a load generator should not spend its CPU signing while
        the gateway is measured); run_tcp sends them in order after the handshake."""
        if not self.queue:
            self._spare.extend(self._reserve() for _ in range(SPARE_SEQS))
        for i in range(n):
            kind = kinds[i % len(kinds)]
            lel = 25.0 if kind.startswith("alarm") else None
            self.event_seq += 1
            eid = (self.boot, self.event_seq)
            body = messages.event(
                self.boot, self.event_seq, kind, 60, lel=lel, det=0 if lel is not None else None
            )
            self.queue.append((eid, body, self._frame(messages.EVENT, body, False), self.seq))

    def send_next(self) -> bytes:
        if self.queue[0][3] <= self.wire_seq:
            # a handshake or a re-send went out after these were prepared: a frame seq must
            # only grow, so sign them again
            old, self.queue = self.queue, deque()
            for eid, body, _, _ in old:
                self.queue.append((eid, body, self._frame(messages.EVENT, body, False), self.seq))
        eid, body, f, seq = self.queue.popleft()
        self.wire_seq = seq
        self.unacked[eid] = body
        self.sent_at[eid] = time.perf_counter()
        return f

    def resend(self) -> bytes:
        """Frames for every unacknowledged event, oldest first."""
        return b"".join(self._frame(messages.EVENT, b) for b in self.unacked.values())

    def take_out(self) -> bytes:
        out, self.out = b"".join(self.out), []
        return out

    def feed(self, data: bytes) -> list[tuple[int, dict]]:
        """Gateway frames in: the handshake, acks and time syncs are applied (what the
        handshake wants sent goes to `out`); (type, body) of each frame acted on is returned."""
        out = []
        for r in self.decoder.feed(data):
            if not isinstance(r, frame.Frame):
                continue
            try:
                body = messages.decode_body(r.mtype, r.body)
            except ValueError:
                continue
            if r.mtype == messages.TIME:
                if not self._time(r, body):
                    continue
            elif r.mtype == messages.ACK:
                if not self._in_session(r):
                    continue
                for b, s in body["ids"]:
                    if self.unacked.pop((b, s), None) is not None:
                        self.acked.add((b, s))
            elif not self._in_session(r):
                continue
            out.append((r.mtype, body))
        return out

    def _in_session(self, r: frame.Frame) -> bool:
        return r.boot == self.gw_boot and self.gw_window is not None and self.gw_window.accept(
            r.seq
        )

    def _time(self, r: frame.Frame, body: dict) -> bool:
        if body["boot"] != self.boot:
            return False  # answers another boot of ours: a replay
        gn = body.get("gn")
        confirms = self.nonce is not None and body.get("nonce") == self.nonce
        if confirms:
            self.gw_boot, self.gw_window, self.nonce = r.boot, ReplayWindow(r.seq), None
            self.time_synced = True
            self.confirmations += 1
            if gn is not None:
                self.out.append(self.birth(gn=gn, nonce=False))
            if self.unacked:
                self.out.append(self.resend())
            return True
        if gn is None:
            return False  # a time frame moves nothing unless it echoes our nonce
        if self.gw_boot != r.boot:
            self.gw_boot = self.gw_window = None  # another gateway boot: ask anew
        self.out.append(self.birth(gn=gn, nonce=self.gw_boot is None))
        if self.gw_boot is not None and self.unacked:
            self.out.append(self.resend())  # the gateway dropped them outside our session
        return True


async def open_link(
    dev: SynDevice, host: str, port: int, timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and do the handshake: births (one a second) until the gateway session is
    confirmed and the birth echoing `gn` has gone out."""
    reader, writer = await asyncio.open_connection(host, port)
    dev.link_down()
    deadline = time.monotonic() + timeout
    try:
        while not dev.linked:
            writer.write(dev.birth())
            await writer.drain()
            until = min(deadline, time.monotonic() + 1.0)
            while not dev.linked and time.monotonic() < until:
                try:
                    data = await asyncio.wait_for(reader.read(65536), until - time.monotonic())
                except TimeoutError:
                    break
                if not data:
                    raise ConnectionError("gateway closed the link during the handshake")
                dev.feed(data)
                writer.write(dev.take_out())
            if time.monotonic() >= deadline and not dev.linked:
                raise TimeoutError("no handshake with the gateway")
        writer.write(dev.take_out())
        await writer.drain()
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def run_tcp(
    dev: SynDevice,
    host: str,
    port: int,
    events: int = 0,
    rate: float | None = None,
    window: int = 64,
    kinds: tuple[str, ...] = ("alarm.low", "alarm.clear"),
) -> None:
    """Connect, handshake, then send the device's prepared events plus `events` more (at `rate`
    per second, or as fast as the window allows), and wait until all are acknowledged,
    reconnecting (and re-sending whatever is unacknowledged) if the connection drops."""
    if events:
        dev.prepare(events, kinds)
    sent = 0
    t0 = time.perf_counter()
    while True:
        try:
            reader, writer = await open_link(dev, host, port)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        try:
            acked_event = asyncio.Event()

            async def read(reader=reader, writer=writer, acked_event=acked_event) -> None:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("gateway closed the link")
                    before = len(dev.acked)
                    dev.feed(data)
                    if dev.out:
                        writer.write(dev.take_out())
                    if len(dev.acked) != before:
                        acked_event.set()

            rd = asyncio.create_task(read())
            try:
                while dev.queue or dev.unacked:
                    if rd.done():
                        rd.result()
                    if dev.queue and len(dev.unacked) < window:
                        if rate:
                            delay = t0 + sent / rate - time.perf_counter()
                            if delay > 0:
                                await asyncio.sleep(delay)
                        writer.write(dev.send_next())
                        sent += 1
                        if sent % 16 == 0:
                            await writer.drain()
                        continue
                    await writer.drain()
                    acked_event.clear()
                    try:
                        await asyncio.wait_for(acked_event.wait(), 1.0)
                    except TimeoutError:
                        if rd.done():
                            rd.result()
                return
            finally:
                rd.cancel()
        except (ConnectionError, OSError):
            dev.link_down()
            await asyncio.sleep(0.2)
        finally:
            writer.close()
