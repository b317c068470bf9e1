# JSON read strictly at a boundary, the one reader the gateway's record check and the
# regulator's ingest share (host only: stays off the board, firmware/manifest.py). A key twice in
# one object (two readers could take different values), NaN and Infinity (not JSON) are refused;
# nesting is counted before parsing, since json.loads recurses and a deep document must never
# reach it.

import json


class StrictJsonError(ValueError):
    """What makes the text unacceptable (the caller says where)."""


def nesting_depth(raw, limit):
    """The deepest [ / { nesting in JSON text, counted without parsing (strings skipped),
    stopping as soon as it passes limit."""
    depth = deepest = 0
    in_string = escaped = False
    for b in raw:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _pairs(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise StrictJsonError("a key appears twice in one object")
    return obj


def _constant(name):
    raise StrictJsonError("%s is not JSON" % name)


def loads(text):
    """json.loads refusing duplicate keys and NaN/Infinity (StrictJsonError, a ValueError)."""
    return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
