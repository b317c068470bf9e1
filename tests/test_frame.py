"""Framing: COBS, CRC-32, HMAC tag and the streaming decoder's resynchronisation."""

import hashlib
import hmac
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasguard.protocol import auth, cbor, cobs, frame, messages

KEY = bytes(range(16))
SIGNER = auth.Signer(KEY)


@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    enc = cobs.encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs.decode(enc) == data


@given(st.binary(min_size=16, max_size=100), st.binary(max_size=300))
def test_hmac_matches_the_standard_library(key, msg):
    ours = auth.Signer(key).tag(msg)
    assert ours == hmac.new(key, msg, hashlib.sha256).digest()[:16]
    assert auth.crc(msg) == zlib.crc32(msg)
    assert auth._crc32_slow(msg) == zlib.crc32(msg)


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        auth.Signer(b"short")


def _event(seq: int, boot: int = 4) -> bytes:
    body = messages.event(boot, seq, "alarm.low", seq, det=seq % 8, lel=21.5)
    return messages.pack(SIGNER, messages.EVENT, boot, seq, "dev-a", body)


def _segments(garbage: bytes) -> list[bytes]:
    return [s for s in garbage.split(b"\x00") if s]


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.binary(max_size=80), st.booleans()), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=64),
)
def test_garbage_interleaved_with_frames_yields_every_frame_and_a_reason_per_drop(chunks, split):
    """Noise between frames never costs a valid frame, and every dropped segment has a reason."""
    wire = bytearray()
    expected_frames = []
    expected_drops = 0
    pending = b""  # garbage since the last frame: the frame's leading 0x00 delimits it
    for seq, (garbage, with_frame) in enumerate(chunks, start=1):
        wire += garbage
        pending += garbage
        if with_frame:
            wire += _event(seq)
            expected_frames.append(seq)
            expected_drops += len(_segments(pending))
            pending = b""
    expected_drops += len(_segments(pending))
    dec = frame.FrameDecoder(SIGNER)
    out = []
    for i in range(0, len(wire), split):  # bytes arrive in arbitrary pieces
        out += dec.feed(bytes(wire[i : i + split]))
    out += dec.feed(b"\x00")  # the line goes idle: trailing garbage is delimited
    frames = [r for r in out if isinstance(r, frame.Frame)]
    drops = [r for r in out if isinstance(r, frame.Dropped)]
    assert [f.seq for f in frames] == expected_frames
    assert len(drops) == expected_drops
    assert all(d.reason in frame.REASONS for d in drops)
    assert dec.counts.get("ok", 0) == len(frames)
    assert sum(dec.counts.get(r, 0) for r in frame.REASONS) == len(drops)


@given(st.binary(min_size=16, max_size=40).filter(lambda k: k != KEY))
def test_a_wrong_key_is_rejected_as_auth(key):
    wire = messages.pack(auth.Signer(key), messages.ACK, 1, 1, "dev-a", messages.ack([(1, 2)]))
    (r,) = frame.FrameDecoder(SIGNER).feed(wire)
    assert isinstance(r, frame.Dropped) and r.reason == frame.AUTH


def test_frame_claiming_another_device_is_rejected():
    keys = {"dev-a": auth.Signer(KEY), "dev-b": auth.Signer(b"b" * 16)}
    # dev-a's key signs a frame that claims to be dev-b
    forged = messages.pack(
        keys["dev-a"], messages.EVENT, 1, 1, "dev-b", messages.event(1, 1, "alarm.clear", 5)
    )
    dec = frame.FrameDecoder(keys.get)
    (r,) = dec.feed(forged)
    assert isinstance(r, frame.Dropped) and r.reason == frame.AUTH
    (r,) = dec.feed(
        messages.pack(
            keys["dev-a"], messages.EVENT, 1, 1, "dev-c", messages.event(1, 1, "alarm.clear", 5)
        )
    )
    assert r.reason == frame.UNKNOWN


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_single_byte_corruption_is_caught(pos_seed, xor):
    wire = bytearray(_event(9))
    raw = bytearray(cobs.decode(bytes(wire[1:-1])))
    pos = pos_seed % len(raw)
    raw[pos] ^= xor or 1
    (r,) = frame.FrameDecoder(SIGNER).feed(b"\x00" + cobs.encode(bytes(raw)) + b"\x00")
    assert isinstance(r, frame.Dropped) and r.reason == frame.CRC


def test_oversize_run_is_dropped_once_and_memory_stays_bounded():
    dec = frame.FrameDecoder(SIGNER)
    out = dec.feed(b"\x01" * (frame.MAX_WIRE * 5))
    assert [d.reason for d in out] == [frame.OVERSIZE]
    assert len(dec._buf) <= frame.MAX_WIRE
    out = dec.feed(b"\x00" + _event(3))  # the next delimiter resynchronises
    assert [type(r).__name__ for r in out] == ["Frame"]


def test_building_an_oversize_frame_is_refused():
    body = cbor.dumps({"kind": "x" * frame.MAX_FRAME})
    with pytest.raises(frame.FrameError, match="larger"):
        frame.encode(SIGNER, messages.EVENT, 1, 1, "dev-a", body)


def test_wrong_version_and_bad_header_are_named():
    raw = bytearray(cobs.decode(_event(1)[1:-1]))
    raw[10] = 0  # id length 0
    raw[-4:] = struct.pack(">I", zlib.crc32(bytes(raw[:-4])))
    (r,) = frame.FrameDecoder(SIGNER).feed(b"\x00" + cobs.encode(bytes(raw)) + b"\x00")
    assert r.reason == frame.HEADER


def test_reflected_types_are_distinct():
    # the device accepts only gateway types and vice versa; the sets never overlap
    assert not set(messages.FROM_DEVICE) & set(messages.FROM_GATEWAY)
    assert all(t < 0x80 for t in messages.FROM_DEVICE)
    assert all(t >= 0x80 for t in messages.FROM_GATEWAY)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.just(b"\x00"),
            st.binary(min_size=frame.MAX_WIRE - 2, max_size=frame.MAX_WIRE + 3),
            st.integers(0, 3).map(lambda i: _good_frame(i)),
        ),
        max_size=12,
    ),
    cut=st.integers(1, 64),
)
def test_the_fast_and_the_byte_by_byte_decoders_agree(pieces, cut):
    """The gateway feeds bytes (whole runs at a time), the device a memoryview (byte by byte):
    the same stream, however it is cut, gives the same frames and drops."""
    stream = b"".join(pieces)
    fast, slow = frame.FrameDecoder(SIGNER), frame.FrameDecoder(SIGNER)
    a, b = [], []
    for i in range(0, len(stream), cut):
        a += fast.feed(stream[i : i + cut])
        b += slow.feed(memoryview(stream[i : i + cut]))

    def show(rs):
        return [
            (r.seq, r.body) if isinstance(r, frame.Frame) else (r.reason, r.length) for r in rs
        ]

    assert show(a) == show(b)
    assert fast.counts == slow.counts


def _good_frame(i):
    return _event(i + 1)
