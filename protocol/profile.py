# Detector register profiles: a JSON data file per detector model says which Modbus registers to
# read and what their values mean. The loader checks a profile once; decoding then runs on the
# device's safety loop, so it uses small integers only (tenths of %LEL) and allocates nothing.
import json

# Detector states, ordered by severity: when several rules fire, the highest code wins.
OK = 0
WARMUP = 1
INHIBIT = 2
CALIBRATION = 3
FAULT = 4
EOL = 5
NOANSWER = 6  # set by the poller, never by a profile
STATE_NAMES = ("ok", "warmup", "inhibit", "calibration", "fault", "eol", "noanswer")
_PROFILE_STATES = STATE_NAMES[:6]

BAD = -999999  # tenths value of a reading that is not a number (NaN, inf, out of raw range)
_TYPES = ("int16", "uint16", "float32")
_KINDS = ("enum", "bits", "expect")


class ProfileError(ValueError):
    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


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


def _f32_tenths(hi, lo):
    # IEEE float32 from two registers -> round(value * 10) with small-integer arithmetic only
    exp = (hi >> 7) & 0xFF
    if exp == 255:
        return BAD
    if exp == 0:
        return 0  # zero or subnormal
    full10 = (0x800000 | ((hi & 0x7F) << 16) | lo) * 10
    shift = 150 - exp
    if shift <= 0:
        return BAD  # |value| >= 2**23: no detector reads that
    if shift > 28:
        v = 0
    else:
        v = (full10 + (1 << (shift - 1))) >> shift
    return -v if hi & 0x8000 else v


class Profile:
    def __init__(self, d):
        if not isinstance(d, dict):
            raise ProfileError("profile", "must be a JSON object")
        name = d.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 32:
            raise ProfileError("name", "must be a string of 1..32 characters")
        self.name = name
        self.function = _int(d, "function", 3, 4, "")
        self.start = _int(d, "start", 0, 65535, "")
        self.count = _int(d, "count", 1, 32, "")
        r = d.get("reading")
        if not isinstance(r, dict):
            raise ProfileError("reading", "missing")
        rtype = r.get("type", "int16")
        if rtype not in _TYPES:
            raise ProfileError("reading.type", "one of " + ", ".join(_TYPES))
        self.rtype = _TYPES.index(rtype)
        width = 2 if rtype == "float32" else 1
        self.roff = _int(r, "offset", 0, self.count - width, "reading.")
        self.swap = r.get("word_order", "big") == "little"
        self.mul = _int(r, "mul", -1000, 1000, "reading.", 1)
        self.div = _int(r, "div", 1, 1000, "reading.", 1)
        self.add = _int(r, "add", -10000, 10000, "reading.", 0)
        raw = r.get("raw_range")
        self.raw_lo, self.raw_hi = (-32768, 65535) if raw is None else self._pair(raw, "raw_range")
        valid = d.get("valid_tenths", [-100, 1100])
        self.valid_lo, self.valid_hi = self._pair(valid, "valid_tenths")
        rules = []
        for i, rule in enumerate(d.get("status", ())):
            rules.append(self._rule(rule, "status[%d]." % i))
        self.rules = tuple(rules)
        reset = d.get("reset_alarm")
        self.reset = None
        if reset is not None:
            fn = _int(reset, "function", 5, 6, "reset_alarm.")
            self.reset = (
                fn,
                _int(reset, "address", 0, 65535, "reset_alarm."),
                _int(reset, "value", 0, 65535, "reset_alarm."),
            )

    def _pair(self, v, field):
        if not (
            isinstance(v, list)
            and len(v) == 2
            and isinstance(v[0], int)
            and isinstance(v[1], int)
            and v[0] <= v[1]
        ):
            raise ProfileError(field, "must be [low, high] integers")
        return v[0], v[1]

    def _rule(self, rule, where):
        if not isinstance(rule, dict):
            raise ProfileError(where[:-1], "must be an object")
        kind = rule.get("kind")
        if kind not in _KINDS:
            raise ProfileError(where + "kind", "one of " + ", ".join(_KINDS))
        off = _int(rule, "offset", 0, self.count - 1, where)
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
            bits = tuple((1 << b, s) for b, s in table.items())
            return (1, off, bits, 0)
        return (0, off, table, _state(rule.get("default", "fault"), where + "default"))

    # --- hot path: no allocation ---------------------------------------------------------------

    def tenths(self, buf, at):
        """Reading in tenths of %LEL from register data buf[at:] (2 bytes per register)."""
        i = at + 2 * self.roff
        if self.rtype == 2:
            hi = (buf[i] << 8) | buf[i + 1]
            lo = (buf[i + 2] << 8) | buf[i + 3]
            if self.swap:
                hi, lo = lo, hi
            return _f32_tenths(hi, lo)
        raw = (buf[i] << 8) | buf[i + 1]
        if self.rtype == 0 and raw & 0x8000:
            raw -= 0x10000
        if raw < self.raw_lo or raw > self.raw_hi:
            return BAD
        return raw * self.mul // self.div + self.add

    def state(self, buf, at, tenths):
        """Detector state from the same register data; a reading outside valid_tenths is FAULT."""
        st = OK
        if tenths == BAD or tenths < self.valid_lo or tenths > self.valid_hi:
            st = FAULT
        for kind, off, table, other in self.rules:
            i = at + 2 * off
            raw = (buf[i] << 8) | buf[i + 1]
            if kind == 0:
                s = table.get(raw, other)
            elif kind == 1:
                s = OK
                for mask, bs in table:
                    if raw & mask and bs > s:
                        s = bs
            else:
                s = OK if raw == table else other
            if s > st:
                st = s
        return st


def profiles_dir():
    here = __file__
    cut = here.rfind("/")
    return (here[:cut] if cut >= 0 else ".") + "/profiles"


def load(name_or_dict):
    """A Profile from a dict (inline in a config) or the name of a file in profiles/."""
    if isinstance(name_or_dict, dict):
        return Profile(name_or_dict)
    name = name_or_dict
    if not isinstance(name, str) or not name or "/" in name or "." in name:
        raise ProfileError("profile", "invalid profile name %r" % (name,))
    try:
        with open(profiles_dir() + "/" + name + ".json") as f:
            d = json.load(f)
    except OSError:
        raise ProfileError("profile", "no profile named %r" % name) from None
    except ValueError as e:
        raise ProfileError("profile", "%s.json is not valid JSON (%s)" % (name, e)) from None
    p = Profile(d)
    if p.name != name:
        raise ProfileError("name", "file %s.json names itself %r" % (name, p.name))
    return p
