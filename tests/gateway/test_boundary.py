"""The gateway's body boundary: its fast path (cbor2 + walk + canonical re-encode) accepts and
returns exactly what protocol/cbor.py's loads does, and the hostile bodies of issue 20 item 3
are refused."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasguard.gateway import boundary
from gasguard.protocol import cbor, messages


def _same(a, b) -> bool:
    """Equal, with the same types all the way down (1, 1.0 and True differ), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _same(ka, kb) and _same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return a == b


def _verdict(f, raw):
    try:
        return True, f(raw)
    except (ValueError, cbor.CBORError):
        return False, None


def _agree(raw: bytes) -> None:
    ok_ref, ref = _verdict(cbor.loads, raw)
    ok_gw, got = _verdict(boundary.loads, raw)
    assert ok_gw == ok_ref, raw.hex()
    if ok_ref:
        assert _same(got, ref), raw.hex()


scalars = st.one_of(
    st.integers(-(1 << 64), (1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
)
keys = st.one_of(st.integers(-100, 100), st.text(max_size=4), st.binary(max_size=2))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_canonical_bodies_decode_as_the_strict_decoder_decodes_them(v):
    for raw in (cbor.dumps(v), cbor2.dumps(v), cbor2.dumps(v, canonical=True)):
        _agree(raw)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_get_the_strict_decoders_verdict(raw):
    _agree(raw)


@settings(max_examples=1000, deadline=None)
@given(values, st.integers(0, 200), st.integers(0, 255))
def test_mutated_bodies_get_the_strict_decoders_verdict(v, at, byte):
    raw = bytearray(cbor.dumps(v))
    raw[at % len(raw)] = byte
    _agree(bytes(raw))


def _deep(n: int) -> bytes:
    return b"\x81" * n + b"\x00"


HOSTILE = {
    # kind alarm.high, then kind alarm.clear: cbor2 let the last win
    "duplicate key": bytes.fromhex(
        "a2646b696e646a616c61726d2e68696768646b696e646b616c61726d2e636c656172"
    ),
    "tag": bytes.fromhex("c11a69248100"),
    "tag inside": bytes.fromhex("a16474696d65c11a69248100"),
    "trailing bytes": cbor.dumps({"a": 1}) + b"\x00",
    "nesting 17": _deep(17),
    "nesting 1000": _deep(1000),
    "self reference": bytes.fromhex("d81c81d81d00"),
    "undefined": b"\xf7",
    "simple 16": b"\xf0",
    "bignum": bytes.fromhex("c249010000000000000000"),
    "array key": bytes.fromhex("a1820102" "01"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_hostile_bodies_of_issue_20_are_refused(name):
    with pytest.raises(boundary.BodyError):
        boundary.loads(HOSTILE[name])


def test_nesting_of_16_is_accepted_and_17_is_not():
    assert boundary.loads(_deep(16)) == cbor.loads(_deep(16))
    with pytest.raises(boundary.BodyError):
        boundary.loads(_deep(17))


def test_a_valid_event_passes_and_an_unknown_field_or_a_long_detail_does_not():
    ev = messages.event(1, 2, "alarm.high", 5, det=0, lel=62.5)
    assert boundary.decode(messages.EVENT, cbor.dumps(ev)) == ev
    for bad in (dict(ev, extra=1), dict(ev, detail="x" * 97), dict(ev, id=[1, -1])):
        with pytest.raises(boundary.BodyError):
            boundary.decode(messages.EVENT, cbor.dumps(bad))
