"""The one boundary between a device's bytes and the gateway: a body is decoded under the rules
of protocol/cbor.py (no duplicate keys, tags, trailing bytes, nesting past 16, ...) and checked
against the message catalogue before anything else touches it.

protocol/cbor.py's pure-Python loads costs ~10 us a body, cbor2's C decoder ~1 us, and the
gateway reads tens of thousands a second. So the fast path is cbor2, then one walk that admits
only plain values (no tag objects, no tuples, ints within the 64-bit CBOR range, nesting within
16, which also ends any self-reference cbor2 could build) and adds up the size of their
*shortest* encoding: the body must be exactly that long. A body that decodes to a value and is
no longer than that value's shortest encoding has no room for anything else: no duplicate key
(cbor2 keeps the last, but the first still took bytes), no tag, no trailing byte, no indefinite
length, no non-shortest head. (Every device writes the canonical form, which is the shortest.)
Whatever fails the fast path goes to protocol/cbor.py's loads for the verdict, so the result is
always what that loads returns (tests/gateway/test_boundary.py holds the two to each other with
hypothesis). The size walk takes about half the time of the plain-value walk and canonical
re-encode this was first done with (an event body: 4.1 us in all, against 7.4).
"""

from __future__ import annotations

from itertools import chain
from struct import pack as _pack
from struct import unpack as _unpack
from typing import Any

import cbor2

from gasguard.protocol import cbor, messages

MAX_DEPTH = 16  # protocol/cbor.py's limit: the body map is depth 0
_INT_MIN = -(1 << 64)
_INT_MAX = (1 << 64) - 1
_INF = float("inf")
_chain = chain.from_iterable


class BodyError(ValueError):
    """A body refused at the boundary; str() says why (CBOR rule or catalogue field)."""


def _head(n: int) -> int:
    """Bytes of a CBOR head carrying n (an unsigned int, a length or a count), shortest form."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    return 5 if n < 0x100000000 else 9


def _float(x: float) -> int:
    """Bytes of x's shortest exact CBOR float (half, single or double; NaN and inf as half)."""
    if x != x or x in (_INF, -_INF):
        return 3
    for size, fmt in ((3, ">e"), (5, ">f")):
        try:
            if _unpack(fmt, _pack(fmt, x))[0] == x:
                return size
        except OverflowError:
            pass
    return 9


def _size(v: Any, depth: int) -> int:
    """The shortest encoding's size of v, or -1 when v is not what protocol/cbor.py's loads
    could have returned (within its depth). Ints and strings are sized in line: a body is a map
    of a dozen of them, and a call each was most of the walk's time."""
    t = type(v)
    if t is dict:
        items: Any = _chain(v.items())  # keys and values in turn (a key is never a container)
    elif t is list:
        items = v
    else:
        return _scalar(v, t)
    if depth >= MAX_DEPTH:
        return -1
    n = _head(len(v))
    for y in items:
        ty = type(y)
        if ty is int:
            if y >= 0:
                if y > _INT_MAX:
                    return -1
                n += _head(y)
            elif y < _INT_MIN:
                return -1
            else:
                n += _head(-1 - y)
        elif ty is str:
            b = len(y) if y.isascii() else len(y.encode())
            n += _head(b) + b
        else:
            m = _size(y, depth + 1) if ty is dict or ty is list else _scalar(y, ty)
            if m < 0:
                return -1
            n += m
    return n


def _scalar(v: Any, t: type) -> int:
    if t is int:
        if v >= 0:
            return _head(v) if v <= _INT_MAX else -1
        return _head(-1 - v) if v >= _INT_MIN else -1
    if t is str:
        b = len(v) if v.isascii() else len(v.encode())
        return _head(b) + b
    if t is bytes:
        return _head(len(v)) + len(v)
    if t is float:
        return _float(v)
    if t is bool or v is None:
        return 1
    return -1  # a tag object, a tuple, undefined, a simple value: not ours


def loads(raw: bytes) -> Any:
    """CBOR bytes -> value, exactly as protocol/cbor.py's loads would decode (or refuse) them."""
    try:
        v = cbor2.loads(raw)
        if _size(v, 0) == len(raw):
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
