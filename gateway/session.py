"""Gateway side of one device link: frames in, checked messages out; replies signed for the device.

Pure logic, no I/O, so the gateway's serial and TCP links, the HIL rig that reads a real board's
link, and the tests all share it. Every frame ends in exactly one counted result: "ok", one of the
frame decoder's drop reasons (crc, auth, unknown-device, ...), or one of
  replay     header (boot, seq) already seen or older than the window: a replayed frame
  direction  a gateway->device type arriving from a device (a reflected frame)
  body       the CBOR body is not a valid message of its type
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from gasguard.protocol import frame, messages
from gasguard.protocol.auth import Signer

WINDOW = 64  # out-of-order tolerance of the replay window, in frames

REPLAY = "replay"
DIRECTION = "direction"
BODY = "body"


class ReplayWindow:
    """Accepts each (boot, seq) once. A new boot resets it; an older boot is a replay."""

    def __init__(self) -> None:
        self.boot = -1
        self.top = -1
        self.seen = 0  # bit i: top - i was accepted

    def accept(self, boot: int, seq: int) -> bool:
        if boot < self.boot:
            return False
        if boot > self.boot:
            self.boot, self.top, self.seen = boot, seq, 1
            return True
        if seq > self.top:
            shift = seq - self.top
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1)
            self.top = seq
            return True
        back = self.top - seq
        if back >= WINDOW or self.seen >> back & 1:
            return False
        self.seen |= 1 << back
        return True


@dataclass
class Message:
    device: str
    mtype: int
    boot: int  # header: the device's boot counter at transmission
    seq: int
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return messages.TYPE_NAMES[self.mtype]


@dataclass
class DeviceState:
    """What the gateway knows of one device from its birth and heartbeats."""

    device: str
    birth: dict[str, Any] | None = None
    boot: int = -1
    health: dict[str, Any] | None = None
    last_seen: float = 0.0
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    tx_seq: int = 0


class LinkSession:
    """Decodes one byte stream (a serial line or a TCP connection) that may carry frames of any
    provisioned device. `keys` maps device id -> key bytes; `gateway_boot` must grow across
    gateway restarts (the device refuses frames whose (boot, seq) does not move forward)."""

    def __init__(
        self,
        keys: dict[str, bytes],
        gateway_boot: int,
        devices: dict[str, DeviceState] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._signers = {d: Signer(k) for d, k in keys.items()}
        self.gateway_boot = gateway_boot
        self.devices = devices if devices is not None else {}
        self.decoder = frame.FrameDecoder(self._signers.get)
        self.counts: Counter[str] = Counter()
        self.last_drop: tuple[str, int] | None = None
        self.clock = clock

    def state(self, device: str) -> DeviceState:
        st = self.devices.get(device)
        if st is None:
            st = self.devices[device] = DeviceState(device)
        return st

    def feed(self, data: bytes) -> list[Message]:
        out = []
        for r in self.decoder.feed(data):
            if isinstance(r, frame.Dropped):
                self._drop(r.reason, r.length)
                continue
            m = self._check(r)
            if m is not None:
                out.append(m)
        return out

    def _drop(self, reason: str, length: int) -> None:
        self.counts[reason] += 1
        self.last_drop = (reason, length)

    def _check(self, f: frame.Frame) -> Message | None:
        if f.mtype not in messages.FROM_DEVICE:
            self._drop(DIRECTION, len(f.body))
            return None
        try:
            # cbor2 (C) here; the device's own codec is held byte-for-byte to it in the tests
            body = messages.validate(f.mtype, cbor2.loads(f.body))
        except (cbor2.CBORDecodeError, messages.MessageError, ValueError, TypeError):
            self._drop(BODY, len(f.body))
            return None
        st = self.state(f.device)
        # the window is checked after the tag and body: a forged frame must not move it
        if not st.replay.accept(f.boot, f.seq):
            self._drop(REPLAY, len(f.body))
            return None
        self.counts["ok"] += 1
        st.last_seen = self.clock()
        if f.mtype == messages.BIRTH:
            st.birth = body
            st.boot = f.boot
        elif f.mtype == messages.HEARTBEAT:
            st.health = body
            if st.boot < 0:
                st.boot = f.boot
        return Message(f.device, f.mtype, f.boot, f.seq, body)

    # --- replies ----------------------------------------------------------------------------

    def encode(self, device: str, mtype: int, body: dict[str, Any]) -> bytes:
        st = self.state(device)
        st.tx_seq += 1
        return messages.pack(
            self._signers[device], mtype, self.gateway_boot, st.tx_seq, device, body
        )

    def ack(self, device: str, ids: list[tuple[int, int]]) -> bytes:
        """One frame acknowledging up to MAX_ACKS event ids (split longer lists first)."""
        return self.encode(device, messages.ACK, messages.ack(ids))

    def time_sync(self, device: str, boot: int, now: float | None = None) -> bytes:
        t = int(time.time() if now is None else now)
        return self.encode(device, messages.TIME, messages.time_sync(t, boot))

    def command(self, device: str, cmd: str) -> bytes:
        return self.encode(device, messages.COMMAND, messages.command(cmd))


def ack_frames(session: LinkSession, device: str, ids: list[tuple[int, int]]) -> list[bytes]:
    step = messages.MAX_ACKS
    return [session.ack(device, ids[i : i + step]) for i in range(0, len(ids), step)]
