"""Regenerate protocol.json, the byte-level test vectors (run after a deliberate format change).

The vectors are produced by gasguard.protocol and then held fixed: tests check them on CPython
(also against cbor2, hmac, zlib and a reference COBS) and on the MicroPython unix port, and
docs/protocol.md quotes them.
"""

import json
from pathlib import Path

from gasguard.protocol import auth, cbor, cobs, frame, messages, profile, profile_parse

KEY = bytes(range(16))  # 000102...0f: the documentation's example device key
INST = "5f3a9c1e0b7d4a26"  # the board's instance id
NONCE = bytes.fromhex("a1b2c3d4e5f60718")  # the board's handshake challenge
GN = bytes.fromhex("0f1e2d3c4b5a6978")  # the gateway's
OUT = Path(__file__).with_name("protocol.json")


def main() -> None:
    cbor_values = [
        0,
        1,
        23,
        24,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**64 - 1,
        -1,
        -24,
        -25,
        -256,
        -(2**64),
        0.0,
        -0.0,
        1.5,
        65504.0,
        100000.0,
        3.4028234663852886e38,
        1.1,
        5.960464477539063e-8,
        1e-7,
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
        b"",
        b"\x00\xff",
        "",
        "a",
        "\u6c34",
        "gas leak",
        [],
        [1, [2, 3]],
        {},
        {"b": 1, "aa": 2, 10: 3, -1: 4},
        {b"k": [None, True]},
    ]
    vec = {
        "key_hex": KEY.hex(),
        "cbor": [],
        "cobs": [],
        "hmac": [],
        "frames": [],
        "drops": [],
        "profiles": [],
    }
    for v in cbor_values:
        vec["cbor"].append({"py": repr(v), "hex": cbor.dumps(v).hex()})
    for data in (
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x11\x22\x00\x33",
        bytes(range(1, 255)),
        bytes(range(1, 256)),
        b"\x11\x00" * 3,
    ):
        vec["cobs"].append({"data_hex": data.hex(), "encoded_hex": cobs.encode(data).hex()})
    for msg in (b"", b"gasguard", bytes(200)):
        vec["hmac"].append({"msg_hex": msg.hex(), "tag_hex": auth.Signer(KEY).tag(msg).hex()})
    s = auth.Signer(KEY)
    frames = [
        (
            "birth",
            messages.BIRTH,
            7,
            1,
            messages.birth(
                "kitchen-1",
                INST,
                "0.1.0",
                "5f3a9c1e",
                "power",
                "nc",
                [{"addr": 1, "gas": "methane", "profile": "generic-x10"}],
                nonce=NONCE,
            ),
        ),
        (
            "heartbeat",
            messages.HEARTBEAT,
            7,
            2,
            messages.heartbeat(
                61,
                "open",
                "none",
                {"period_ms": 50, "mean_us": 1800, "max_us": 4100, "overruns": 0},
                61000,
                0,
                [{"state": "ok", "lel": 0.4, "errors": 0}],
                lost=0,
            ),
        ),
        (
            "event-alarm-high",
            messages.EVENT,
            7,
            3,
            messages.event(
                7, 12, "alarm.high", 75, time=1764000000, det=0, lel=62.5, valve="closed"
            ),
        ),
        ("ack", messages.ACK, 3, 9, messages.ack([(7, 12)])),
        ("time", messages.TIME, 3, 10, messages.time_sync(1764000000, 7, NONCE, GN)),
        (
            "birth-answer",
            messages.BIRTH,
            7,
            2,
            messages.birth(
                "kitchen-1",
                INST,
                "0.1.0",
                "5f3a9c1e",
                "power",
                "nc",
                [{"addr": 1, "gas": "methane", "profile": "generic-x10"}],
                gn=GN,
            ),
        ),
        ("command-identify", messages.COMMAND, 3, 11, messages.command("identify")),
    ]
    for name, mtype, boot, seq, body in frames:
        device = "kitchen-1"
        vec["frames"].append(
            {
                "name": name,
                "type": mtype,
                "boot": boot,
                "seq": seq,
                "device": device,
                "body_py": repr(body),
                "body_hex": cbor.dumps(body).hex(),
                "wire_hex": messages.pack(s, mtype, boot, seq, device, body).hex(),
            }
        )
    good = bytes.fromhex(vec["frames"][2]["wire_hex"])
    raw = cobs.decode(good[1:-1])
    flipped = bytearray(raw)
    flipped[20] ^= 0x01
    wrong_key = messages.pack(
        auth.Signer(b"x" * 16), messages.ACK, 1, 1, "kitchen-1", messages.ack([(1, 1)])
    )
    v1 = bytearray(raw)
    v1[0] = 1  # protocol version 1: a board or gateway from before the handshake
    import struct

    v1[-4:] = struct.pack(">I", auth.crc(bytes(v1[:-4])))
    for name, wire, reason in (
        ("bit-flip", b"\x00" + cobs.encode(bytes(flipped)) + b"\x00", frame.CRC),
        ("wrong-key", wrong_key, frame.AUTH),
        ("version-1", b"\x00" + cobs.encode(bytes(v1)) + b"\x00", frame.VERSION),
        ("truncated", b"\x00" + cobs.encode(raw[:20]) + b"\x00", frame.SHORT),
    ):
        vec["drops"].append({"name": name, "wire_hex": wire.hex(), "reason": reason})
    regs = {
        "generic-x10": [
            ([250, 0], 250, "ok"),
            ([0xFFF6, 0], -10, "ok"),
            ([3, 1], 3, "warmup"),
            ([1000, 0], 1000, "ok"),  # 100.0 %LEL: the top of the measuring range
            ([1001, 0], 1001, "overrange"),  # above it: a high alarm, never a fault
            ([1500, 2], 1500, "overrange"),  # saturated and flagging a fault: still gas
            ([0xFFCD, 0], -51, "fault"),  # below the range: a drifting or broken sensor
            ([0, 3], 0, "eol"),
            ([0, 7], 0, "fault"),
        ],
        "float32-status-mode": [
            ([0x4248, 0x0000, 0, 0, 0, 0, 0, 0, 5], 500, "ok"),  # 50.0 %LEL
            ([0x3F80, 0x0000, 0, 0, 0, 0, 0, 0, 5], 10, "ok"),  # 1.0
            ([0x41A2, 0x6666, 0, 0, 0, 0, 0, 0, 5], 203, "ok"),  # 20.3 (float32 rounding)
            ([0, 0, 0, 0, 1, 0, 0, 0, 5], 0, "warmup"),
            ([0, 0, 0, 0, 2, 0, 0, 0, 5], 0, "inhibit"),
            ([0, 0, 0, 0, 3, 0, 0, 0, 5], 0, "calibration"),
            ([0, 0, 0, 4, 0, 0, 0, 0, 5], 0, "fault"),
            ([0, 0, 0, 16, 0, 0, 0, 0, 5], 0, "eol"),
            ([0, 0, 0, 0, 0, 0, 0, 0, 1], 0, "fault"),
            ([0x7FC0, 0, 0, 0, 0, 0, 0, 0, 5], profile.BAD, "fault"),  # NaN
            ([0x7F80, 0, 0, 0, 0, 0, 0, 0, 5], profile.HUGE, "overrange"),  # +Inf
            ([0xFF80, 0, 0, 0, 0, 0, 0, 0, 5], profile.BAD, "fault"),  # -Inf
            ([0x4B00, 0x0000, 0, 0, 0, 0, 0, 0, 5], profile.HUGE, "overrange"),  # 2**23
            ([0x4CBE, 0xBC20, 0, 0, 0, 0, 0, 0, 5], profile.HUGE, "overrange"),  # 1e8
            ([0x42C8, 0x3333, 0, 0, 0, 0, 0, 0, 5], 1001, "overrange"),  # 100.1 %LEL
            ([0x4316, 0x0000, 0, 0, 0, 0, 0, 0, 5], 1500, "overrange"),  # 150.0
        ],
        "scaled-1200": [
            ([100, 0], 0, "ok"),
            ([0, 0], -100, "fault"),
            ([1200, 0], 1100, "ok"),
            ([300, 0], 200, "ok"),
            ([0xFFFF, 0], profile.BAD, "fault"),
            ([100, 1], 0, "warmup"),
            ([100, 9], 0, "eol"),
        ],
    }
    for name, cases in regs.items():
        p = profile_parse.load(name)
        for registers, tenths, state in cases:
            buf = b"".join(r.to_bytes(2, "big") for r in registers)
            got_t = p.tenths(buf, 0)
            got_s = profile.STATE_NAMES[p.state(buf, 0, got_t)]
            assert (got_t, got_s) == (tenths, state), (name, registers, got_t, got_s)
            vec["profiles"].append(
                {"profile": name, "registers": registers, "tenths": tenths, "state": state}
            )
    OUT.write_text(json.dumps(vec, indent=1) + "\n")


if __name__ == "__main__":
    main()
