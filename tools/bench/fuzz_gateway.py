"""`gasguard fuzz gateway`: the gateway's whole receive path, in process and without I/O:
bytes -> frame (COBS, CRC, header, HMAC) -> session (handshake, window) -> strict body decoder
and catalogue check -> CloudEvent or dead letter (schema-checked) or retained state -> JSON.

Half the inputs are a link's raw byte stream; the other half are a message type and a body that
the harness signs into a frame with the device's key, so the fuzzer's mutations reach the body
decoder and everything after it instead of dying at the tag. The device's session is confirmed
beforehand, so events, heartbeats and replies are accepted. A bad input may only be dropped and
counted (a frame result, a dead letter, a flagged reading); any exception is a crash, and every
payload that leaves must be JSON that parses back.

The corpus is seeded with issue 20's hostile inputs: a heartbeat at -2^64 %LEL, NaN and 1e308
readings, a clock in the year 36812, duplicate keys, tags, trailing bytes, nesting past 16 and a
self-referencing reply.
"""

from __future__ import annotations

import json
import logging
import time

import orjson

from gasguard.gateway import schemas
from gasguard.gateway.events import event_item
from gasguard.gateway.health import Health
from gasguard.gateway.logs import JsonFormatter
from gasguard.gateway.session import LinkSession, ReplayWindow
from gasguard.protocol import cbor, frame, messages
from gasguard.protocol.auth import Signer

DEVICE = "kitchen-1"
INST = "5f3a9c1e0b7d4a26"
KEY = bytes(range(16))
TYPES = (messages.BIRTH, messages.HEARTBEAT, messages.EVENT, messages.REPLY, messages.ACK, 0x7F)
LOOP = {"period_ms": 20, "mean_us": 900, "max_us": 2100, "overruns": 0}
DETS = [{"addr": 1, "gas": "methane", "profile": "generic-x10"}]


def _seed(mtype: int, body: bytes) -> bytes:
    return bytes([0, TYPES.index(mtype)]) + body


def seeds() -> list[bytes]:
    ev = cbor.dumps(messages.event(1, 1, "alarm.high", 60, det=0, lel=62.5))
    hb = messages.heartbeat(60, "closed", "high", LOOP, 60000, 0, [{"state": "ok", "errors": 0}])
    reply = cbor.dumps({"cmd": "identify", "ok": True, "ref": 0, "data": 0})[:-1]
    signer = Signer(KEY)
    wire = messages.pack(signer, messages.EVENT, 1, 9, DEVICE, messages.event(1, 2, "ack", 5))
    out = [
        _seed(messages.EVENT, ev),
        _seed(messages.HEARTBEAT, cbor.dumps(dict(hb, dets=[{"state": "ok", "errors": 0,
                                                             "lel": -(2**64)}]))),
        _seed(messages.HEARTBEAT, cbor.dumps(dict(hb, dets=[{"state": "ok", "errors": 0,
                                                             "lel": float("nan")}]))),
        _seed(messages.EVENT, cbor.dumps(messages.event(1, 3, "alarm.high", 5, lel=1e308))),
        _seed(messages.EVENT, cbor.dumps(messages.event(1, 4, "alarm.low", 5, lel=float("nan")))),
        _seed(messages.EVENT, cbor.dumps(messages.event(1, 5, "boot", 5, time=(1 << 40) - 1))),
        _seed(messages.EVENT, bytes([ev[0] + 1]) + ev[1:] + cbor.dumps({"kind": "ack"})[1:]),
        _seed(messages.EVENT, b"\xa1\x62id\xc1\x1a\x69\x24\x81\x00"),
        _seed(messages.EVENT, ev + b"\x00"),
        _seed(messages.EVENT, b"\xa1\x64data" + b"\x81" * 40 + b"\x00"),
        _seed(messages.REPLY, reply + bytes.fromhex("d81c81d81d00")),
        _seed(messages.BIRTH, cbor.dumps(messages.birth(
            DEVICE, INST, "0.1.0", "cfg", "power", "nc", DETS, nonce=b"\x01" * 8))),
        _seed(messages.EVENT, cbor.dumps(messages.event(1, 6, "events.lost", 5, n=12))),
        b"\x01" + bytes(wire),
        b"\x01" + bytes(wire) + b"\x00garbage\x00" + bytes(wire[:20]),
    ]  # fmt: skip
    return out


def build():
    """(one_input, seeds) for tools/bench/fuzz.py."""
    signer = Signer(KEY)
    fmt = JsonFormatter()

    def one(data: bytes) -> None:
        if len(data) < 2:
            return
        session = LinkSession({DEVICE: signer}, 1, clock=lambda: 1000.0, wall=lambda: 1.7e9)
        st = session.state(DEVICE)
        st.boot, st.window, st.inst = 1, ReplayWindow(1), INST
        health = Health("site-9", 30.0, clock=lambda: 1.7e9)
        health.birth(DEVICE, 1, messages.birth(DEVICE, INST, "0.1.0", "c", "power", "nc", DETS))
        if data[0] & 1:
            wire = data[1:]
        else:
            mtype = TYPES[data[1] % len(TYPES)]
            try:
                wire = frame.encode(signer, mtype, 1, 2, DEVICE, data[2:])
            except frame.FrameError:
                return  # larger than a frame may be: never built, never accepted
        for m in session.feed(bytes(wire)):
            payloads = []
            if m.mtype == messages.EVENT:
                item, _ = event_item("site-9", "gw-1", m, st.inst, 1.7e9)
                payloads.append(item.payload)
                health.event(DEVICE, m.body)
            elif m.mtype == messages.HEARTBEAT:
                health.heartbeat(DEVICE, m.body)
            elif m.mtype == messages.BIRTH:
                health.birth(DEVICE, m.boot, m.body)
            elif m.mtype == messages.REPLY:  # logged: the log line must be made
                rec = logging.LogRecord("gasguard.gateway", logging.INFO, "", 0, "device reply",
                                        None, None)  # fmt: skip
                rec.reply = m.body
                json.loads(fmt.format(rec))
            payloads.append(orjson.dumps(schemas.check(health.state_event(DEVICE))))
            for p in payloads:
                orjson.loads(p)
        session.take_replies()

    return one, seeds()


def smoke(n: int = 2000) -> int:
    """Run the seeds and n mutations of them without atheris (tests); returns inputs run."""
    import random

    one, corpus = build()
    rng = random.Random(20)
    runs = 0
    t0 = time.monotonic()
    for s in corpus:
        one(s)
        runs += 1
    while runs < n and time.monotonic() - t0 < 60:
        b = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 4)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        one(bytes(b))
        runs += 1
    return runs
