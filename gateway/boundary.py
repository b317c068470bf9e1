"""The one boundary between a device's bytes and the gateway: a body is decoded under the rules
of protocol/cbor.py (no duplicate keys, tags, trailing bytes, nesting past 16, ...) and checked
against the message catalogue before anything else touches it.

protocol/cbor.py's pure-Python loads costs ~10 us a body, cbor2's C decoder ~1 us, and the
gateway reads tens of thousands a second. Every device writes canonical CBOR, so the fast path is
cbor2, then a walk that admits only plain values (no tag objects, no tuples, ints within the
64-bit CBOR range, nesting within 16, which also ends any self-reference cbor2 could build), then
a re-encode that must give back the very bytes received: a duplicate key, an indefinite length, a
non-shortest head or trailing bytes all fail it. Whatever fails the fast path goes to
protocol/cbor.py's loads for the verdict, so the result is always what that loads returns
(tests/gateway/test_boundary.py holds the two to each other with hypothesis).
"""

from __future__ import annotations

from typing import Any

import cbor2

from gasguard.protocol import cbor, messages

MAX_DEPTH = 16  # protocol/cbor.py's limit: the body map is depth 0
_INT_MIN = -(1 << 64)
_INT_MAX = (1 << 64) - 1
_SCALARS = frozenset((str, bytes, float, bool, type(None)))


class BodyError(ValueError):
    """A body refused at the boundary; str() says why (CBOR rule or catalogue field)."""


def _plain(v: Any, depth: int) -> bool:
    """True when v is what protocol/cbor.py's loads could have returned, within its depth.
    Scalars are checked in line: a body is a map of a dozen of them, and a call each was most
    of the walk's time."""
    t = type(v)
    if t is dict:
        if depth >= MAX_DEPTH:
            return False
        for k, x in v.items():
            tk = type(k)
            if tk is int:
                if not _INT_MIN <= k <= _INT_MAX:
                    return False
            elif tk not in _SCALARS:
                return False  # a tuple key (cbor2's array key) is unhashable in our rules
            tx = type(x)
            if tx is int:
                if not _INT_MIN <= x <= _INT_MAX:
                    return False
            elif tx not in _SCALARS and not _plain(x, depth + 1):
                return False
        return True
    if t is list:
        if depth >= MAX_DEPTH:
            return False
        for x in v:
            tx = type(x)
            if tx is int:
                if not _INT_MIN <= x <= _INT_MAX:
                    return False
            elif tx not in _SCALARS and not _plain(x, depth + 1):
                return False
        return True
    if t is int:
        return _INT_MIN <= v <= _INT_MAX
    return t in _SCALARS


def loads(raw: bytes) -> Any:
    """CBOR bytes -> value, exactly as protocol/cbor.py's loads would decode (or refuse) them."""
    try:
        v = cbor2.loads(raw)
        if _plain(v, 0) and cbor2.dumps(v, canonical=True) == raw:
            return v
    except Exception:  # noqa: BLE001 - any cbor2 refusal or oddity: the strict decoder decides
        pass
    try:
        return cbor.loads(raw)
    except cbor.CBORError as e:
        raise BodyError("cbor: %s" % e) from None
    except (RecursionError, MemoryError, ValueError, TypeError) as e:
        raise BodyError("cbor: %s" % type(e).__name__) from None


def decode(mtype: int, raw: bytes) -> dict[str, Any]:
    """A device body: strictly decoded, then validated against the catalogue (types, ranges,
    string lengths, no unknown field). Readings and clocks a regulator cannot use are kept, to
    be flagged where they are published (cloudevents.reading, device_time_invalid)."""
    body = loads(raw)
    try:
        return messages.validate(mtype, body)
    except messages.MessageError as e:
        raise BodyError("field %s" % e) from None
