# Profile checking: turns a profile's JSON into a Profile, refusing anything unclear with the
# field and the reason. Only needed while the configuration loads (the device frees it after).
from .profile import _PROFILE_STATES, _TYPES, Profile, ProfileError

_KINDS = ("enum", "bits", "expect")


def _int(d, key, lo, hi, where, default=None):
    v = d.get(key, default)
    if v is None:
        raise ProfileError(where + key, "missing")
    if not isinstance(v, int) or v is True or v is False or not lo <= v <= hi:
        raise ProfileError(where + key, "must be an integer %d..%d" % (lo, hi))
    return v


def _state(name, field):
    if name not in _PROFILE_STATES:
        raise ProfileError(
            field, "unknown state %r (one of %s)" % (name, ", ".join(_PROFILE_STATES))
        )
    return _PROFILE_STATES.index(name)


def _pair(v, field):
    if not (
        isinstance(v, list)
        and len(v) == 2
        and isinstance(v[0], int)
        and isinstance(v[1], int)
        and v[0] <= v[1]
    ):
        raise ProfileError(field, "must be [low, high] integers")
    return v[0], v[1]


def _rule(rule, where, count):
    if not isinstance(rule, dict):
        raise ProfileError(where[:-1], "must be an object")
    kind = rule.get("kind")
    if kind not in _KINDS:
        raise ProfileError(where + "kind", "one of " + ", ".join(_KINDS))
    off = _int(rule, "offset", 0, count - 1, where)
    if kind == "expect":
        value = _int(rule, "value", 0, 65535, where)
        return (2, off, value, _state(rule.get("else", "fault"), where + "else"))
    m = rule.get("map")
    if not isinstance(m, dict) or not m:
        raise ProfileError(where + "map", "must be a non-empty object")
    table = {}
    for k, name in m.items():
        try:
            key = int(k)
        except ValueError:
            raise ProfileError(where + "map", "key %r is not an integer" % k) from None
        if kind == "bits" and not 0 <= key <= 15:
            raise ProfileError(where + "map", "bit %d outside 0..15" % key)
        table[key] = _state(name, where + "map." + k)
    if kind == "bits":
        return (1, off, tuple((1 << b, s) for b, s in table.items()), 0)
    return (0, off, table, _state(rule.get("default", "fault"), where + "default"))


def build(d):
    """Check a profile dict and return a Profile, or raise ProfileError naming the field."""
    if not isinstance(d, dict):
        raise ProfileError("profile", "must be a JSON object")
    p = Profile()
    name = d.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 32:
        raise ProfileError("name", "must be a string of 1..32 characters")
    p.name = name
    p.function = _int(d, "function", 3, 4, "")
    p.start = _int(d, "start", 0, 65535, "")
    p.count = _int(d, "count", 1, 32, "")
    r = d.get("reading")
    if not isinstance(r, dict):
        raise ProfileError("reading", "missing")
    rtype = r.get("type", "int16")
    if rtype not in _TYPES:
        raise ProfileError("reading.type", "one of " + ", ".join(_TYPES))
    p.rtype = _TYPES.index(rtype)
    width = 2 if rtype == "float32" else 1
    p.roff = _int(r, "offset", 0, p.count - width, "reading.")
    p.swap = r.get("word_order", "big") == "little"
    p.mul = _int(r, "mul", -1000, 1000, "reading.", 1)
    p.div = _int(r, "div", 1, 1000, "reading.", 1)
    p.add = _int(r, "add", -10000, 10000, "reading.", 0)
    raw = r.get("raw_range")
    p.raw_lo, p.raw_hi = (-32768, 65535) if raw is None else _pair(raw, "raw_range")
    p.valid_lo, p.valid_hi = _pair(d.get("valid_tenths", [-100, 1100]), "valid_tenths")
    rules = []
    for i, rule in enumerate(d.get("status", ())):
        rules.append(_rule(rule, "status[%d]." % i, p.count))
    p.rules = tuple(rules)
    reset = d.get("reset_alarm")
    p.reset = None
    if reset is not None:
        p.reset = (
            _int(reset, "function", 5, 6, "reset_alarm."),
            _int(reset, "address", 0, 65535, "reset_alarm."),
            _int(reset, "value", 0, 65535, "reset_alarm."),
        )
    return p
