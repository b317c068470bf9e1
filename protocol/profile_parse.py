# Profile checking: turns a profile's JSON into a Profile, refusing anything unclear with the
# field and the reason. Only needed while the configuration loads (the device frees it after).
# Strict like the config (and protocol/schemas/device-config.schema.json, $defs/profile): each
# key read is popped from a copy, and a key left over is unknown; every value's type is checked.
# The helpers share their names with gasguard/config.py's: each name is interned for good.
from .profile import STATE_NAMES, Profile, ProfileError

_PROFILE_STATES = STATE_NAMES[:6]  # what a profile may name; the rest are the poller's
_TYPES = ("int16", "uint16", "float32")

_KINDS = ("enum", "bits", "expect")


def _get(d, key, where, kinds, default=None, why="must be an object"):
    # default None: the key is required; an object comes back as a copy
    if key not in d:
        if default is None:
            raise ProfileError(where + key, "missing")
        return default
    v = d.pop(key)
    if not isinstance(v, kinds) or isinstance(v, bool):
        raise ProfileError(where + key, why)
    return dict(v) if kinds is dict else v


def _left(d, where):
    for k in d:
        raise ProfileError(
            where + (k or repr(k)), "unknown key: misspelt? the board would never read it"
        )


def _num(v, lo, hi):
    # an integer in lo..hi; JSON's 3.0 is the integer 3 (as JSON Schema has it)
    return (
        isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi and v == int(v)
    )


def _int(d, key, lo, hi, where, default=None):
    why = "must be an integer %d..%d" % (lo, hi)
    v = _get(d, key, where, (int, float), default, why)
    if not _num(v, lo, hi):
        raise ProfileError(where + key, why)
    return int(v)


def _pair(d, key, lo, hi, where, default):
    why = "must be [low, high], integers %d..%d, low first" % (lo, hi)
    v = _get(d, key, where, list, default, why)
    if not (len(v) == 2 and _num(v[0], lo, hi) and _num(v[1], lo, hi) and v[0] <= v[1]):
        raise ProfileError(where + key, why)
    return int(v[0]), int(v[1])


def _state(name, field):
    if not isinstance(name, str) or name not in _PROFILE_STATES:
        raise ProfileError(
            field, "unknown state %r (one of %s)" % (name, ", ".join(_PROFILE_STATES))
        )
    return _PROFILE_STATES.index(name)


def _rule(rule, where, count):
    if not isinstance(rule, dict):
        raise ProfileError(where[:-1], "must be an object")
    rule = dict(rule)
    kind = _get(rule, "kind", where, str, None, "must be text")
    if kind not in _KINDS:
        raise ProfileError(where + "kind", "one of " + ", ".join(_KINDS))
    off = _int(rule, "offset", 0, count - 1, where)
    if kind == "expect":
        value = _int(rule, "value", 0, 65535, where)
        other = _get(rule, "else", where, str, "fault", "must be a state name")
        other = _state(other, where + "else")
        _left(rule, where)
        return (2, off, value, other)
    m = _get(rule, "map", where, dict)
    if not m:
        raise ProfileError(where + "map", "must be a non-empty object")
    top, n = (15, 2) if kind == "bits" else (65535, 5)  # the largest number, its digits
    table = {}
    for k, name in m.items():
        # digits only, checked as bytes: iterating a str would intern each character
        digits = [c for c in k.encode("utf-8", "surrogatepass") if not 48 <= c <= 57]
        if not 0 < len(k) <= n or digits or int(k) > top:
            raise ProfileError(where + "map." + k, "must be a number 0..%d" % top)
        table[int(k)] = _state(name, where + "map." + k)
    if kind == "bits":
        _left(rule, where)
        return (1, off, tuple((1 << b, s) for b, s in table.items()), 0)
    other = _get(rule, "default", where, str, "fault", "must be a state name")
    other = _state(other, where + "default")
    _left(rule, where)
    return (0, off, table, other)


def build(d):
    """Check a profile dict and return a Profile, or raise ProfileError naming the field."""
    if not isinstance(d, dict):
        raise ProfileError("profile", "must be a JSON object")
    d = dict(d)
    p = Profile()
    name = _get(d, "name", "", str, None, "must be text")
    if not 0 < len(name) <= 32:
        raise ProfileError("name", "must be a string of 1..32 characters")
    p.name = name
    for k in ("title", "notes"):  # for people: checked, not kept
        if len(_get(d, k, "", str, "", "must be text")) > 1000:
            raise ProfileError(k, "at most 1000 characters")
    p.function = _int(d, "function", 3, 4, "")
    p.start = _int(d, "start", 0, 65535, "")
    p.count = _int(d, "count", 1, 32, "")
    r = _get(d, "reading", "", dict)
    w = "reading."
    rtype = _get(r, "type", w, str, "int16", "must be text")
    if rtype not in _TYPES:
        raise ProfileError(w + "type", "one of " + ", ".join(_TYPES))
    p.rtype = _TYPES.index(rtype)
    p.roff = _int(r, "offset", 0, p.count - (2 if p.rtype == 2 else 1), w)
    order = _get(r, "word_order", w, str, "big", "must be text")
    if order not in ("big", "little"):
        raise ProfileError(w + "word_order", "big or little")
    p.swap = order == "little"
    if p.rtype == 2:  # the float is the reading: scaling would be ignored, so it is refused
        for k in ("mul", "div", "add", "raw_range"):
            if k in r:
                raise ProfileError(w + k, "not used with a float32 reading")
    p.mul = _int(r, "mul", -1000, 1000, w, 1)
    if p.mul == 0:
        raise ProfileError(w + "mul", "must not be 0: every reading would be 0 %LEL")
    p.div = _int(r, "div", 1, 1000, w, 1)
    p.add = _int(r, "add", -10000, 10000, w, 0)
    p.raw_lo, p.raw_hi = _pair(r, "raw_range", -32768, 65535, w, [-32768, 65535])
    lo, hi = (-32768, 32767) if p.rtype == 0 else (0, 65535)
    if p.rtype != 2 and max(p.raw_lo, lo) > min(p.raw_hi, hi):  # every reading a fault
        raise ProfileError(w + "raw_range", "no %s register value is in it" % rtype)
    _left(r, w)
    p.valid_lo, p.valid_hi = _pair(d, "valid_tenths", -10000, 10000, "", [-100, 1100])
    rules = _get(d, "status", "", list, [], "must be a list")
    if len(rules) > 16:
        raise ProfileError("status", "at most 16 rules")
    p.rules = tuple(_rule(rule, "status[%d]." % i, p.count) for i, rule in enumerate(rules))
    p.reset = None
    if "reset_alarm" in d:
        rs = _get(d, "reset_alarm", "", dict)
        w = "reset_alarm."
        p.reset = (
            _int(rs, "function", 5, 6, w),
            _int(rs, "address", 0, 65535, w),
            _int(rs, "value", 0, 65535, w),
        )
        _left(rs, w)
    _left(d, "")
    return p


def profiles_dir():
    here = __file__
    cut = here.rfind("/")
    return (here[:cut] if cut >= 0 else ".") + "/profiles"


def load(name_or_dict):
    """A Profile from a dict (inline in a config) or the name of a file in profiles/."""
    if isinstance(name_or_dict, dict):
        return build(name_or_dict)
    name = name_or_dict
    if not isinstance(name, str) or not name or "/" in name or "." in name:
        raise ProfileError("profile", "invalid profile name %r" % (name,))
    import json

    try:
        with open(profiles_dir() + "/" + name + ".json") as f:
            d = json.load(f)
    except OSError:
        raise ProfileError("profile", "no profile named %r" % name) from None
    except ValueError as e:
        raise ProfileError("profile", "%s.json is not valid JSON (%s)" % (name, e)) from None
    p = build(d)
    if p.name != name:
        raise ProfileError("name", "file %s.json names itself %r" % (name, p.name))
    return p
