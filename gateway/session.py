"""Gateway side of one device link: frames in, checked messages out; replies signed for the device.

Pure logic, no I/O, so the gateway's serial and TCP links, the HIL rig that reads a real board's
link, and the tests all share it. Every frame ends in exactly one counted result: "ok", one of the
frame decoder's drop reasons (crc, auth, unknown-device, ...), or one of
  session    outside the device's confirmed session (the device is challenged again)
  replay     inside the session's boot, but a seq already seen or older than the window
  direction  a gateway->device type arriving from a device (a reflected frame)
  body       the body is not strict CBOR or not a valid message of its type (gateway/boundary.py)
  challenge  a birth that does not echo our challenge: answered with one, not acted on

Sessions (docs/protocol.md, "Sessions: the handshake"): per device, in memory, a confirmed session
(the board's boot, a 64-frame window anchored at the confirming birth, the board's instance id
from that birth) and an outstanding challenge `gn`. A birth is acted on only when it echoes `gn`
(it confirms a new session) or belongs to the confirmed one; anything else from the device is
accepted only inside the session. Nothing here is kept on disk: every session starts from a fresh
random challenge, so no recorded frame is accepted after a gateway restart.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gasguard.protocol import frame, messages
from gasguard.protocol.auth import Signer

from . import boundary

WINDOW = 64  # out-of-order tolerance of the replay window, in frames
CHALLENGE_KEEP_S = 30.0  # an outstanding gn is reused until used or this old
CHALLENGE_EVERY_S = 0.5  # at most one challenge a device for frames outside its session

SESSION = "session"
REPLAY = "replay"
DIRECTION = "direction"
BODY = "body"
CHALLENGE = "challenge"
REJECTED = (frame.UNKNOWN, frame.AUTH)  # drops that name a board that is not let in
# what the retained status counts as "refused": intact frames (the CRC held) the gateway's rules
# turned away: no key, a wrong tag, another protocol version, a bad header or body, a reflected
# or a replayed frame. Not line noise (crc, cobs, short, oversize: a cable's matter, not a
# sender's), nor the handshake at work (session, challenge: every board after a gateway
# restart), nor the gateway's own failures (error)
REFUSED = (*REJECTED, frame.VERSION, frame.HEADER, BODY, DIRECTION, REPLAY)


class ReplayWindow:
    """Accepts each seq once, within WINDOW of the newest; anchored at the confirming frame."""

    __slots__ = ("top", "seen")

    def __init__(self, seq: int) -> None:
        self.top = seq
        # bit i: top - i was accepted. Everything up to the anchor counts as seen: a frame of
        # the same boot from before the confirming birth is from before the session
        self.seen = (1 << WINDOW) - 1

    def accept(self, seq: int) -> bool:
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


@dataclass(slots=True)
class Message:
    device: str
    mtype: int
    boot: int  # header: the device's boot counter at transmission
    seq: int
    body: dict[str, Any]
    raw: bytes = b""  # the CBOR body as received (a dead letter carries it)

    @property
    def name(self) -> str:
        return messages.TYPE_NAMES[self.mtype]


NO_SESSION = -1  # the boot of a device no birth has confirmed a session of (boots are >= 0)
NEVER = -1e9  # a clock reading long past: the first challenge is not held back


@dataclass(slots=True)
class DeviceState:
    """One device's session, shared by every link the device may use."""

    device: str
    boot: int = NO_SESSION  # the confirmed session's boot
    inst: str = ""  # the board's instance id, from the confirming birth
    window: ReplayWindow | None = None
    tx_seq: int = 0
    gn: bytes | None = None  # the outstanding challenge
    gn_at: float = 0.0
    challenged_at: float = NEVER
    answered: bytes | None = None  # the last birth nonce answered outside the session


class LinkSession:
    """Decodes one byte stream (a serial line or a TCP connection) that may carry frames of any
    provisioned device. `signers` maps device id -> Signer (shared by every link: a Signer per
    device per link was most of a link's memory) or key bytes; `gateway_boot` is the boot in the
    headers of our frames (for diagnosis: boards rely on the handshake, not on it).

    feed() returns the messages accepted; the replies the handshake needs (a `time` frame with a
    challenge, or echoing a birth's nonce) are queued in `replies` for the caller to write."""

    def __init__(
        self,
        signers: Mapping[str, Signer] | Mapping[str, bytes],
        gateway_boot: int,
        devices: dict[str, DeviceState] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if all(isinstance(s, Signer) for s in signers.values()):
            self._signers: Mapping[str, Signer] = signers  # type: ignore[assignment]
        else:  # keys: one link of its own (the HIL rig, tests)
            self._signers = {d: Signer(k) for d, k in signers.items()}
        self.gateway_boot = gateway_boot
        self.devices = devices if devices is not None else {}
        self.decoder = frame.FrameDecoder(self._signers.get)
        self.counts: Counter[str] = Counter()
        self.last_drop: tuple[str, int, str | None] | None = None  # reason, length, device
        self.clock = clock
        self.wall = wall
        self.replies: list[bytes] = []
        # the clock when this link last carried an accepted frame (any device), and the devices
        # whose frames it carried: authentic, well-formed and inside the device's session
        self.valid_at = 0.0
        self.devices_seen: set[str] = set()
        # told of each frame refused with a device id in it (unknown-device, auth)
        self.on_reject: Callable[[str, str], None] | None = None

    def state(self, device: str) -> DeviceState:
        st = self.devices.get(device)
        if st is None:
            st = self.devices[device] = DeviceState(device)
        return st

    def feed(self, data: bytes) -> list[Message]:
        out = []
        for r in self.decoder.feed(data):
            if isinstance(r, frame.Dropped):
                self._drop(r.reason, r.length, r.device)
                continue
            m = self._check(r)
            if m is not None:
                out.append(m)
        return out

    def take_replies(self) -> bytes:
        out, self.replies = b"".join(self.replies), []
        return out

    def _drop(self, reason: str, length: int, device: str | None = None) -> None:
        self.counts[reason] += 1
        self.last_drop = (reason, length, device)
        if device is not None and self.on_reject is not None and reason in REJECTED:
            self.on_reject(reason, device)

    def _check(self, f: frame.Frame) -> Message | None:
        if f.mtype not in messages.FROM_DEVICE:
            self._drop(DIRECTION, len(f.body), f.device)
            return None
        try:
            body = boundary.decode(f.mtype, f.body)
        except boundary.BodyError:
            self._drop(BODY, len(f.body), f.device)
            return None
        now = self.clock()
        st = self.state(f.device)
        in_boot = f.boot == st.boot and st.window is not None
        if f.mtype == messages.BIRTH:
            gn = body.get("gn")
            if gn is not None and gn == st.gn and now - st.gn_at <= CHALLENGE_KEEP_S:
                # confirms a new session: the window is anchored here (checked after the tag
                # and body: a forged frame must not move it)
                st.boot, st.window, st.inst = f.boot, ReplayWindow(f.seq), body["inst"]
                st.gn = None  # used
            elif not (in_boot and st.window.accept(f.seq)):  # type: ignore[union-attr]
                self._challenge(st, f.boot, body.get("nonce"), now)
                self._drop(CHALLENGE, len(f.body), f.device)
                return None
            elif body["inst"] != st.inst:  # the same boot, another instance: not this board
                self._challenge(st, f.boot, body.get("nonce"), now)
                self._drop(SESSION, len(f.body), f.device)
                return None
            if "nonce" in body:  # the board's challenge: echoed, which confirms our session
                self.replies.append(self.time_sync(f.device, f.boot, nonce=body["nonce"]))
        elif not in_boot:
            self._drop(SESSION, len(f.body), f.device)
            self._challenge(st, f.boot, None, now)
            return None
        elif not st.window.accept(f.seq):  # type: ignore[union-attr]
            self._drop(REPLAY, len(f.body), f.device)
            return None
        self.counts["ok"] += 1
        # only now does this link carry the board: an authentic frame alone may be a recording
        # (one replayed on a new connection made the board's own connection look stale), while
        # the board itself gets here at once with a birth of its session or one confirming a new
        # one
        self.valid_at = now
        self.devices_seen.add(f.device)
        return Message(f.device, f.mtype, f.boot, f.seq, body, f.body)

    def _challenge(self, st: DeviceState, boot: int, nonce: bytes | None, now: float) -> None:
        """A time frame with our challenge gn (a fresh one unless the outstanding one is still
        young), echoing the birth's nonce if there is one; at most every CHALLENGE_EVERY_S a
        device, except that a birth with a nonce not answered yet is answered."""
        if now - st.challenged_at < CHALLENGE_EVERY_S and (nonce is None or nonce == st.answered):
            return
        if st.gn is None or now - st.gn_at > CHALLENGE_KEEP_S:
            st.gn, st.gn_at = os.urandom(messages.NONCE_LEN), now
        st.challenged_at = now
        if nonce is not None:
            st.answered = nonce
        self.replies.append(self.time_sync(st.device, boot, nonce=nonce, gn=st.gn))

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

    def time_sync(
        self,
        device: str,
        boot: int,
        now: float | None = None,
        nonce: bytes | None = None,
        gn: bytes | None = None,
    ) -> bytes:
        t = int(self.wall() if now is None else now)
        return self.encode(device, messages.TIME, messages.time_sync(t, boot, nonce, gn))

    def command(self, device: str, cmd: str) -> bytes:
        return self.encode(device, messages.COMMAND, messages.command(cmd))


def ack_frames(session: LinkSession, device: str, ids: list[tuple[int, int]]) -> list[bytes]:
    step = messages.MAX_ACKS
    return [session.ack(device, ids[i : i + step]) for i in range(0, len(ids), step)]
