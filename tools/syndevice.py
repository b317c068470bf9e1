"""A synthetic device: speaks the device side of the link protocol from CPython, for gateway tests
and benchmarks where hundreds of boards are needed (the firmware itself is tested on the real
MicroPython VM elsewhere). It keeps events until the gateway acknowledges them and re-sends
them after a reconnect, as the firmware does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from gasguard.protocol import frame, messages
from gasguard.protocol.auth import Signer

DETS = [{"addr": 1, "gas": "methane", "profile": "generic-x10"}]


class SynDevice:
    def __init__(self, device: str, key: bytes, boot: int = 1) -> None:
        self.device = device
        self.signer = Signer(key)
        self.boot = boot
        self.seq = 0  # frame sequence (header)
        self.event_seq = 0
        self.unacked: dict[tuple[int, int], bytes] = {}  # id -> event body, in order
        self.acked: set[tuple[int, int]] = set()
        self.time_synced = False
        self.decoder = frame.FrameDecoder({device: self.signer}.get)
        self.sent_at: dict[tuple[int, int], float] = {}
        # prepared, unsent: (id, body, frame, its frame seq)
        self.queue: deque[tuple[tuple[int, int], dict, bytes, int]] = deque()
        self.wire_seq = 0  # highest frame seq put on the wire: the gateway refuses older ones
        self._birth: tuple[bytes, int] | None = None

    def _frame(self, mtype: int, body: dict[str, Any], wire: bool = True) -> bytes:
        self.seq += 1
        if wire:
            self.wire_seq = self.seq
        return messages.pack(self.signer, mtype, self.boot, self.seq, self.device, body)

    def birth(self) -> bytes:
        if self._birth is not None:  # signed by prepare(), ahead of its events
            f, self.wire_seq, self._birth = self._birth[0], self._birth[1], None
            return f
        return self._frame(messages.BIRTH, self._birth_body())

    def _birth_body(self) -> dict[str, Any]:
        return messages.birth(self.device, "0.1.0", "synthetic", "power", "nc", DETS)

    def heartbeat(self, valve: str = "open", alarm: str = "none", lel: float = 0.0) -> bytes:
        loop = {"period_ms": 20, "mean_us": 900, "max_us": 2100, "overruns": 0}
        dets = [{"state": "ok", "lel": lel, "errors": 0}]
        return self._frame(
            messages.HEARTBEAT,
            messages.heartbeat(60, valve, alarm, loop, 60000, len(self.unacked), dets),
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
        the gateway is measured); run_tcp sends them in order, after a birth signed here."""
        if self._birth is None and not self.queue:
            self._birth = (self._frame(messages.BIRTH, self._birth_body(), False), self.seq)
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
            # a birth or a re-send went out after these were prepared: a frame seq must only
            # grow, so sign them again
            old, self.queue = self.queue, deque()
            for eid, body, _, _ in old:
                self.queue.append((eid, body, self._frame(messages.EVENT, body, False), self.seq))
        eid, body, f, seq = self.queue.popleft()
        self.wire_seq = seq
        self.unacked[eid] = body
        self.sent_at[eid] = time.perf_counter()
        return f

    def resend(self) -> bytes:
        """Frames for every unacknowledged event, oldest first (after a reconnect)."""
        return b"".join(self._frame(messages.EVENT, b) for b in self.unacked.values())

    def feed(self, data: bytes) -> list[tuple[int, dict]]:
        """Gateway frames in: acks and time syncs are applied; (type, body) of each returned."""
        out = []
        for r in self.decoder.feed(data):
            if not isinstance(r, frame.Frame):
                continue
            body = messages.decode_body(r.mtype, r.body)
            if r.mtype == messages.ACK:
                for b, s in body["ids"]:
                    if self.unacked.pop((b, s), None) is not None:
                        self.acked.add((b, s))
            elif r.mtype == messages.TIME:
                self.time_synced = True
            out.append((r.mtype, body))
        return out


async def run_tcp(
    dev: SynDevice,
    host: str,
    port: int,
    events: int = 0,
    rate: float | None = None,
    window: int = 64,
    kinds: tuple[str, ...] = ("alarm.low", "alarm.clear"),
) -> None:
    """Connect, birth, then send the device's prepared events plus `events` more (at `rate` per
    second, or as fast as the window allows), and wait until all are acknowledged,
    reconnecting and re-sending whatever is unacknowledged if the connection drops."""
    if events:
        dev.prepare(events, kinds)
    sent = 0
    t0 = time.perf_counter()
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        try:
            writer.write(dev.birth())
            if dev.unacked:
                writer.write(dev.resend())
            await writer.drain()
            acked_event = asyncio.Event()

            async def read(reader=reader, acked_event=acked_event) -> None:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("gateway closed the link")
                    before = len(dev.acked)
                    dev.feed(data)
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
            await asyncio.sleep(0.2)
        finally:
            writer.close()
