# The device configuration: one JSON file written at provisioning, validated at every boot.
# Any problem is a ConfigError naming the field and the reason; the board then keeps the valve
# closed, shows the yellow LED and does not run the loop.
#
# The same rules are protocol/schemas/device-config.schema.json for the host tools, and
# tests/tools/config-corpus.jsonl holds both to the same good and bad configs. Every object is
# strict: each key read is popped from a copy, and a key left over is unknown (a typo), so the
# board never runs on a default nobody chose. A host tool calls collect() to get every error at
# once; on the board the first one ends the check.
import hashlib
import json

from micropython import const

from gasguard.protocol import profile as profiles
from gasguard.protocol import profile_parse
from gasguard.protocol.catalogue import VALVE_KINDS

# Every name and short string here is interned for good although the module is dropped after
# boot, and the pool of names grows by doubling (docs/firmware.md, Memory): so few helpers,
# messages longer than 10 characters, and text checked as bytes (iterating a str interns each
# character).
_MAX_BYTES = const(8192)  # checked before the file is read: a 23 KB one ran the heap out


class ConfigError(ValueError):
    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


errors = None  # a list while collect() runs: every error is kept and the check goes on


def _fail(field, reason):
    if errors is None:
        raise ConfigError(field, reason)
    errors.append(ConfigError(field, reason))


def _get(d, key, where, kinds, default=None, required=False, why="must be an object"):
    # pops the key, so that what is left in d at the end is unknown (_left); an object comes
    # back as a copy (what is popped from it leaves the caller's config as it was)
    if key not in d:
        if required:
            _fail(where + key, "missing")
        return dict(default) if kinds is dict else default
    v = d.pop(key)
    if not isinstance(v, kinds) or (kinds is not bool and isinstance(v, bool)):
        _fail(where + key, why)
        v = default
    return dict(v) if kinds is dict else v


def _left(d, where):
    for k in d:
        _fail(where + (k or repr(k)), "unknown key: misspelt? the board would never read it")


def _str(d, key, where, lo, hi, default=None, required=False):
    v = _get(d, key, where, str, default, required, "must be text")
    if v is not None and not lo <= len(v) <= hi:
        _fail(where + key, "must be %d-%d characters" % (lo, hi))
        return default
    return v


def _num(d, key, where, lo, hi, default, why=""):
    v = _get(d, key, where, (int, float), default, False, "must be a number")
    if not lo <= v <= hi:  # NaN fails this too
        _fail(where + key, "must be a number %s..%s%s" % (lo, hi, why))
        return default
    return v


def _int(d, key, where, lo, hi, default=None, required=False):
    # JSON has one kind of number: 9600.0 is the integer 9600, as JSON Schema says
    why = "must be an integer %d..%d" % (lo, hi)
    v = _get(d, key, where, (int, float), default, required, why)
    if v is None:
        return None
    if not (lo <= v <= hi and v == int(v)):
        _fail(where + key, why)
        return default
    return int(v)


def _ident(d, key, default=None, required=False):
    v = _str(d, key, "", 1, 32, default, required)
    for c in (v or "").encode("utf-8", "surrogatepass"):  # a lone surrogate is no error
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in b"-_.:"):
            _fail(key, "only A-Z a-z 0-9 - _ . : are allowed")
            return default
    return v


class Config:
    """Validated configuration. Percent set points become tenths of %LEL."""

    def __init__(self, d, key=None, raw=None, digest=None):
        if not isinstance(d, dict):
            _fail("config", "must be a JSON object")
            d = {}
        self.digest = digest or hashlib.sha256(raw or json.dumps(d).encode()).digest()[:8]
        d = dict(d)
        # the installer's record (equipment, geometry: config check and commissioning read it):
        # never kept on the board, where it would hold a kilobyte or two of heap for ever
        d.pop("install", None)
        self.raw = d
        self.device_id = _ident(d, "device_id", None, True)
        self.site = _ident(d, "site", "site")
        gases = {"ng": ("methane",), "lpg": ("propane", "butane", "lpg")}
        gas = _get(d, "gas", "", str, None, True, "must be text")
        if gas is not None and gas not in gases:
            _fail("gas", "must be one of ng (natural gas), lpg")
            gas = None
        self.gas = gas
        given = "key_hex" in d
        kh = _str(d, "key_hex", "", 32, 128)
        if kh is not None:
            try:
                k = bytes.fromhex(kh)
            except ValueError:
                k = b""
            if 2 * len(k) != len(kh):  # not hex, an odd digit or spaces
                _fail("key_hex", "must be hexadecimal digits only")
            elif key is None:
                key = k
        if key is None:
            if not given:  # else key_hex was refused above
                _fail("key", "missing: provision the device key (key file or key_hex)")
        elif len(key) < 16:
            _fail("key", "must be at least 16 bytes")
        self.key = key
        self.loop_ms = _int(d, "loop_ms", "", 5, 100, 20)
        self.heartbeat_s = _int(d, "heartbeat_s", "", 1, 3600, 10)

        a = _get(d, "alarm", "", dict, {})
        w = "alarm."
        low = _num(a, "low_alarm_pct", w, 1, 25, 20, " %LEL (GB 15322.1-2019 low alarm)")
        high = _num(a, "high_alarm_pct", w, 25, 60, 50, " %LEL (GB 15322.1-2019: 50)")
        if high <= low:
            _fail(w + "high_alarm_pct", "must be above low_alarm_pct")
        hyst = _num(a, "hysteresis_pct", w, 0.5, 10, 2)
        self.alarm = {
            "low_alarm_tenths": int(low * 10 + 0.5),
            "high_alarm_tenths": int(high * 10 + 0.5),
            "hysteresis_tenths": int(hyst * 10 + 0.5),
            "debounce_low": _int(a, "debounce_low", w, 1, 10, 2),
            "debounce_high": _int(a, "debounce_high", w, 1, 5, 1),
            "debounce_clear": _int(a, "debounce_clear", w, 1, 20, 3),
            "confirm_low": _int(a, "confirm_low", w, 1, 2, 1),
            "close_on_low": _get(
                a, "close_on_low", w, bool, False, False, "must be true or false"
            ),
            "silence_s": _int(a, "silence_s", w, 10, 3600, 300),
        }
        _left(a, w)
        rates = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

        b = _get(d, "bus", "", dict, {})
        w = "bus."
        self.bus = {
            "uart": _int(b, "uart", w, 0, 2, 2),
            "baud": _int(b, "baud", w, 1200, 115200, 9600),
            "tx": _int(b, "tx", w, 0, 39, 17),
            "rx": _int(b, "rx", w, 0, 39, 16),
            "de": _int(b, "de", w, 0, 39),
            "deadline_ms": _int(b, "deadline_ms", w, 20, 1000, 100),
            "fail_limit": _int(b, "fail_limit", w, 1, 10, 3),
            "fault_retry_ms": _int(b, "fault_retry_ms", w, 100, 60000, 1000),
            "stale_ms": _int(b, "stale_ms", w, 0, 10000, 2000),
            "path": _str(b, "path", w, 1, 255),  # unix port: the pty
        }
        if self.bus["baud"] not in rates:
            _fail(w + "baud", "must be a standard rate: 1200 2400 4800 9600 19200 38400 ...")
        _left(b, w)

        dets = _get(d, "detectors", "", list, None, True, "must be a list")
        if dets is not None and not 1 <= len(dets) <= 8:
            _fail("detectors", "1 to 8 detectors on one bus")
        dets = dets or []
        self.detectors = []
        seen = []
        loaded = {}  # one Profile object per profile name, however many detectors use it
        high = self.alarm["high_alarm_tenths"]
        for i, dd in enumerate(dets):
            w = "detectors[%d]." % i
            if not isinstance(dd, dict):
                _fail(w[:-1], "must be an object")
                continue
            dd = dict(dd)
            addr = _int(dd, "address", w, 1, 247, None, True)
            if addr is not None and addr in seen:
                _fail(w + "address", "address %d is used twice on the bus" % addr)
            seen.append(addr)
            name = _get(dd, "profile", w, (str, dict), None, True, "must be a name or an object")
            prof = loaded.get(name) if isinstance(name, str) else None
            f = w + "profile" + ("" if isinstance(name, str) else ".")  # inline: its fields
            if name is not None and prof is None:
                try:
                    prof = profile_parse.load(name)
                except profiles.ProfileError as e:
                    _fail(f + (e.field if f[-1] == "." else ""), e.reason)
                else:
                    if isinstance(name, str):
                        loaded[name] = prof
                    # a detector that cannot read up to the high set point is blind to the gas
                    # that matters: its full scale (the highest reading its raw range gives; a
                    # float32 has none) and its measuring range (above it: over range) must
                    # reach it
                    top = high
                    if prof.rtype != 2:
                        lo = max(prof.raw_lo, -32768 if prof.rtype == 0 else 0)
                        hi = min(prof.raw_hi, 32767 if prof.rtype == 0 else 65535)
                        top = max(lo * prof.mul // prof.div, hi * prof.mul // prof.div) + prof.add
                    if top < high:
                        _fail(
                            f + ("reading" if f[-1] == "." else ""),
                            "full scale %d tenths of %%LEL cannot reach the high alarm set "
                            "point (%d): a blind detector" % (top, high),
                        )
                    elif prof.valid_hi < high:
                        _fail(
                            f + ("valid_tenths" if f[-1] == "." else ""),
                            "the measuring range ends (%d tenths of %%LEL) below the high "
                            "alarm set point (%d)" % (prof.valid_hi, high),
                        )
            gas = _get(dd, "gas", w, str, None, True, "must be text")
            ok = gases.get(self.gas) or ("methane", "propane", "butane", "lpg")
            if gas is not None and gas not in ok:
                _fail(w + "gas", "a %s detector cannot watch a %s site (needs %s)"
                      % (gas, self.gas, " or ".join(ok)))  # fmt: skip
            closes = _get(dd, "fault_closes_valve", w, bool, True, False, "must be true or false")
            _left(dd, w)
            self.detectors.append(
                (addr, prof, gas, closes, name if isinstance(name, str) else prof and prof.name)
            )
        if 0 < len(dets) < self.alarm["confirm_low"]:
            _fail("alarm.confirm_low", "needs at least that many detectors")

        req = isinstance(d.get("valve"), dict)  # else "valve" is the one error, not its keys
        v = _get(d, "valve", "", dict, {}, True)
        w = "valve."
        kind = _get(v, "kind", w, str, None, req, "must be text")
        if kind is not None and kind not in VALVE_KINDS:
            _fail(w + "kind", "must be nc (normally closed solenoid) or latching")
        if kind == "latching" and "position_pin" not in v:
            _fail(
                w + "position_pin",
                "required for a latching valve: it stays open without power, so its "
                "position must be supervised",
            )
        self.valve = {
            "kind": kind,
            "pin": _int(v, "pin", w, 0, 39, None, req),
            "position_pin": _int(v, "position_pin", w, 0, 39),
            "position_open_level": _int(v, "position_open_level", w, 0, 1, 1),
            "travel_ms": _int(v, "travel_ms", w, 100, 30000, 2000),
            "pulse_ms": _int(v, "pulse_ms", w, 50, 5000, 500),
            "knob_timeout_s": _int(v, "knob_timeout_s", w, 5, 600, 60),
        }
        _left(v, w)

        p = _get(d, "pins", "", dict, {})
        # a line each: a name from a tuple constant is a str object of its own, which as a key
        # of a dict the board keeps would stay in the heap for good; a literal here is interned
        pins = self.pins = {}
        pins["buzzer"] = _int(p, "buzzer", "pins.", 0, 39, 27)
        pins["red"] = _int(p, "red", "pins.", 0, 39, 19)
        pins["yellow"] = _int(p, "yellow", "pins.", 0, 39, 18)
        pins["green"] = _int(p, "green", "pins.", 0, 39, 23)
        pins["fan"] = _int(p, "fan", "pins.", 0, 39, 33)
        pins["ack"] = _int(p, "ack", "pins.", 0, 39, 34)
        pins["reset"] = _int(p, "reset", "pins.", 0, 39, 35)
        gpios = [(w + n, self.valve[n]) for n in ("pin", "position_pin")]
        gpios += [("bus." + n, self.bus[n]) for n in ("tx", "rx", "de")]
        gpios += [("pins." + n, pins[n]) for n in ("buzzer", "red", "yellow", "green", "fan")]
        gpios += [("pins." + n, pins[n]) for n in ("ack", "reset")]
        self.pins["buttons_active_low"] = _get(
            p, "buttons_active_low", "pins.", bool, True, False, "must be true or false"
        )
        self.pins["reset_hold_ms"] = _int(p, "reset_hold_ms", "pins.", 0, 10000, 1000)
        _left(p, "pins.")

        lk = _get(d, "link", "", dict, {})
        w = "link."
        lkind = _get(lk, "kind", w, str, "uart", False, "must be text")
        if lkind not in ("uart", "tcp", "none"):
            _fail(w + "kind", "must be uart, tcp or none")
        if lkind == "tcp" and "host" not in lk:
            _fail(w + "host", "required for a tcp link")
        self.link = {
            "kind": lkind,
            "uart": _int(lk, "uart", w, 0, 2, 1),
            "baud": _int(lk, "baud", w, 1200, 921600, 115200),
            "path": _str(lk, "path", w, 1, 255),
            "host": _str(lk, "host", w, 1, 253),
            "port": _int(lk, "port", w, 1, 65535, 7700),
            "ssid": _str(lk, "ssid", w, 1, 32),
            "password": _str(lk, "password", w, 0, 64),
            "resend_ms": _int(lk, "resend_ms", w, 200, 60000, 3000),
            "window": _int(lk, "window", w, 1, 16, 4),
            # ESP32 UART1's default pins are the SPI flash's: the link needs pins of its own
            "tx": _int(lk, "tx", w, 0, 39, 22),
            "rx": _int(lk, "rx", w, 0, 39, 21),
        }
        if self.link["baud"] not in rates:
            _fail(
                w + "baud", "must be a standard rate: 9600 19200 ... 115200 230400 460800 921600"
            )
        _left(lk, w)
        if lkind == "uart" and self.link["path"] is None:  # a real UART, not a pty
            gpios += [(w + n, self.link[n]) for n in ("tx", "rx")]
        used = {}  # each GPIO once, and one the ESP32 has (no 20, 24, 28-31; 6-11: SPI flash)
        for f, n in gpios:
            if n is not None and (n in (20, 24) or 28 <= n <= 31 or 6 <= n <= 11):
                _fail(f, "GPIO %d: the ESP32 has no such pin to give (6-11: its SPI flash)" % n)
            elif n is not None and n in used:
                _fail(f, "GPIO %d is already used by %s" % (n, used[n]))
            elif n is not None:
                used[n] = f
        _left(d, "")

    def digest_hex(self):
        return "".join("%02x" % b for b in self.digest)

    def plain(self):
        """The validated values on an object of a tiny class, so that this module (and the
        profile parser) can be dropped from memory once the config is loaded."""
        from gasguard import Values

        v = Values()
        for k in (
            "device_id",
            "site",
            "gas",
            "key",
            "loop_ms",
            "heartbeat_s",
            "alarm",
            "bus",
            "detectors",
            "valve",
            "pins",
            "link",
        ):
            setattr(v, k, getattr(self, k))
        v.digest = self.digest_hex()
        return v


def collect(d, key=None):
    """Every error in a config dict at once (host tools): a list of ConfigError."""
    global errors
    errors = []
    try:
        Config(d, key)
        return errors
    finally:
        errors = None


def decode(raw):
    """The config dict from a file's bytes (a UTF-8 byte order mark is allowed)."""
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    try:
        if b"\0" in raw:  # UTF-16 or -32, which CPython's json would decode and the board's not
            raise ValueError
        return json.loads(raw)
    except MemoryError:  # nesting too deep for the heap
        raise ConfigError("config", "does not fit the board's memory (nested too deep?)") from None
    except (ValueError, RuntimeError):  # not UTF-8, not JSON; CPython's nesting limit
        raise ConfigError("config", "configs are JSON: this file is not (YAML? TOML?)") from None


def load(path, key_path=None):
    """Read and validate the config file (and the key file, when there is one)."""
    import os

    raw = b""
    try:
        n = os.stat(path)[6]
        if n <= _MAX_BYTES:  # the size first: reading a file too big runs the heap out
            with open(path, "rb") as f:
                raw = f.read(_MAX_BYTES + 1)
    except OSError:
        raise ConfigError("config", "no config file at %s" % path) from None
    if max(n, len(raw)) > _MAX_BYTES:
        raise ConfigError("config", "%d bytes: the board reads at most %d" % (n, _MAX_BYTES))
    d = decode(raw)
    # the file's bytes and the install block (the installer's record, a kilobyte or two the
    # board ignores) go before validation makes what the board keeps: on a 110 KB heap their
    # holes between kept objects left no room to load the link and the loop (a config with a
    # full install block failed to boot)
    digest = hashlib.sha256(raw).digest()[:8]  # the file's own bytes, as the host tools say
    raw = None
    if isinstance(d, dict):
        d.pop("install", None)
    import gc

    gc.collect()
    key = None
    if key_path is not None:
        try:
            with open(key_path, "rb") as f:
                text = f.read(257)
            key = bytes.fromhex(text.decode().strip())
            if len(text) > 256:
                raise ValueError
        except OSError:
            key = None
        except ValueError:
            raise ConfigError("key", "key file is not hexadecimal (at most 256 bytes)") from None
    return Config(d, key, digest=digest).plain()
