# The device configuration: one JSON file written at provisioning, validated at every boot.
# Any problem is a ConfigError naming the field and the reason; the board then keeps the valve
# closed, shows the yellow LED and does not run the loop.
import hashlib
import json

from gasguard.protocol import profile as profiles

GASES = ("ng", "lpg")
DETECTOR_GASES = {"ng": ("methane",), "lpg": ("propane", "butane", "lpg")}
VALVE_KINDS = ("nc", "latching")
PIN_FIELDS = ("buzzer", "red", "yellow", "green", "fan", "ack", "reset")


class ConfigError(ValueError):
    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


def _get(d, key, where, kinds, default=None, required=False):
    if key not in d:
        if required:
            raise ConfigError(where + key, "missing")
        return default
    v = d[key]
    if (v is True or v is False) and bool not in kinds:
        raise ConfigError(where + key, "must be %s" % "/".join(k.__name__ for k in kinds))
    if not isinstance(v, kinds):
        raise ConfigError(where + key, "must be %s" % "/".join(k.__name__ for k in kinds))
    return v


def _num(d, key, where, lo, hi, default=None, required=False, why=""):
    v = _get(d, key, where, (int, float), default, required)
    if v is not None and not lo <= v <= hi:
        raise ConfigError(where + key, "must be %s..%s%s" % (lo, hi, why))
    return v


def _int(d, key, where, lo, hi, default=None, required=False):
    v = _get(d, key, where, (int,), default, required)
    if v is not None and not lo <= v <= hi:
        raise ConfigError(where + key, "must be an integer %d..%d" % (lo, hi))
    return v


def _ident(v, field):
    if not isinstance(v, str) or not 1 <= len(v) <= 32:
        raise ConfigError(field, "must be 1-32 characters")
    for c in v:
        if not (c.isalpha() or c.isdigit() or c in "-_.:") or ord(c) > 127:
            raise ConfigError(field, "only A-Z a-z 0-9 - _ . : are allowed")
    return v


class Config:
    """Validated configuration. Percent set points become tenths of %LEL."""

    def __init__(self, d, key=None, raw=None):
        if not isinstance(d, dict):
            raise ConfigError("config", "must be a JSON object")
        self.raw = d
        self.digest = hashlib.sha256(raw or json.dumps(d).encode()).digest()[:8]
        self.device_id = _ident(_get(d, "device_id", "", (str,), required=True), "device_id")
        self.site = _ident(_get(d, "site", "", (str,), "site"), "site")
        self.gas = _get(d, "gas", "", (str,), required=True)
        if self.gas not in GASES:
            raise ConfigError("gas", "must be one of ng (natural gas), lpg")
        if key is None:
            kh = _get(d, "key_hex", "", (str,))
            if kh is None:
                raise ConfigError("key", "missing: provision the device key (key file or key_hex)")
            try:
                key = bytes.fromhex(kh)
            except ValueError:
                raise ConfigError("key_hex", "not hexadecimal") from None
        if len(key) < 16:
            raise ConfigError("key", "must be at least 16 bytes")
        self.key = key
        self.loop_ms = _int(d, "loop_ms", "", 5, 100, 20)
        self.heartbeat_s = _int(d, "heartbeat_s", "", 1, 3600, 10)

        a = _get(d, "alarm", "", (dict,), {})
        w = "alarm."
        low = _num(a, "low_alarm_pct", w, 1, 25, 20, why=" %LEL (GB 15322.1-2019 low alarm)")
        high = _num(a, "high_alarm_pct", w, 25, 60, 50, why=" %LEL (GB 15322.1-2019: 50)")
        if high <= low:
            raise ConfigError(w + "high_alarm_pct", "must be above low_alarm_pct")
        hyst = _num(a, "hysteresis_pct", w, 0.5, 10, 2)
        self.alarm = {
            "low_alarm_tenths": int(low * 10 + 0.5),
            "high_alarm_tenths": int(high * 10 + 0.5),
            "hysteresis_tenths": int(hyst * 10 + 0.5),
            "debounce_low": _int(a, "debounce_low", w, 1, 10, 2),
            "debounce_high": _int(a, "debounce_high", w, 1, 5, 1),
            "debounce_clear": _int(a, "debounce_clear", w, 1, 20, 3),
            "confirm_low": _int(a, "confirm_low", w, 1, 2, 1),
            "close_on_low": _get(a, "close_on_low", w, (bool,), False),
            "silence_s": _int(a, "silence_s", w, 10, 3600, 300),
        }

        b = _get(d, "bus", "", (dict,), {})
        self.bus = {
            "uart": _int(b, "uart", "bus.", 0, 2, 2),
            "baud": _int(b, "baud", "bus.", 1200, 115200, 9600),
            "tx": _int(b, "tx", "bus.", 0, 39, 17),
            "rx": _int(b, "rx", "bus.", 0, 39, 16),
            "de": _int(b, "de", "bus.", 0, 39, None),
            "deadline_ms": _int(b, "deadline_ms", "bus.", 20, 1000, 100),
            "fail_limit": _int(b, "fail_limit", "bus.", 1, 10, 3),
            "fault_retry_ms": _int(b, "fault_retry_ms", "bus.", 100, 60000, 1000),
            "stale_ms": _int(b, "stale_ms", "bus.", 0, 10000, 2000),
            "path": _get(b, "path", "bus.", (str,)),  # unix port: the pty
        }

        dets = _get(d, "detectors", "", (list,), required=True)
        if not 1 <= len(dets) <= 8:
            raise ConfigError("detectors", "1 to 8 detectors on one bus")
        self.detectors = []
        seen = []
        loaded = {}  # one Profile object per profile name, however many detectors use it
        for i, dd in enumerate(dets):
            w = "detectors[%d]." % i
            if not isinstance(dd, dict):
                raise ConfigError(w[:-1], "must be an object")
            addr = _int(dd, "address", w, 1, 247, required=True)
            if addr in seen:
                raise ConfigError(w + "address", "address %d is used twice on the bus" % addr)
            seen.append(addr)
            pname = _get(dd, "profile", w, (str, dict), required=True)
            try:
                key = pname if isinstance(pname, str) else None
                prof = loaded.get(key) if key else None
                if prof is None:
                    prof = profiles.load(pname)
                    if key:
                        loaded[key] = prof
            except profiles.ProfileError as e:
                raise ConfigError(w + "profile", str(e)) from None
            gas = _get(dd, "gas", w, (str,), required=True)
            if gas not in DETECTOR_GASES[self.gas]:
                raise ConfigError(
                    w + "gas",
                    "a %s detector cannot watch a %s site (needs %s)"
                    % (gas, self.gas, " or ".join(DETECTOR_GASES[self.gas])),
                )
            closes = _get(dd, "fault_closes_valve", w, (bool,), True)
            self.detectors.append(
                (addr, prof, gas, closes, pname if isinstance(pname, str) else prof.name)
            )
        if self.alarm["confirm_low"] > len(dets):
            raise ConfigError("alarm.confirm_low", "needs at least that many detectors")

        v = _get(d, "valve", "", (dict,), required=True)
        w = "valve."
        kind = _get(v, "kind", w, (str,), required=True)
        if kind not in VALVE_KINDS:
            raise ConfigError(w + "kind", "must be nc (normally closed solenoid) or latching")
        pos = _int(v, "position_pin", w, 0, 39)
        if kind == "latching" and pos is None:
            raise ConfigError(
                w + "position_pin",
                "required for a latching valve: it stays open without power, so its "
                "position must be supervised",
            )
        self.valve = {
            "kind": kind,
            "pin": _int(v, "pin", w, 0, 39, required=True),
            "position_pin": pos,
            "position_open_level": _int(v, "position_open_level", w, 0, 1, 1),
            "travel_ms": _int(v, "travel_ms", w, 100, 30000, 2000),
            "pulse_ms": _int(v, "pulse_ms", w, 50, 5000, 500),
            "knob_timeout_s": _int(v, "knob_timeout_s", w, 5, 600, 60),
        }

        p = _get(d, "pins", "", (dict,), {})
        self.pins = {}
        used = {w + "pin": self.valve["pin"]}
        if pos is not None:
            used[w + "position_pin"] = pos
        for name in ("tx", "rx", "de"):
            if self.bus[name] is not None:
                used["bus." + name] = self.bus[name]
        defaults = {
            "buzzer": 27,
            "red": 12,
            "yellow": 13,
            "green": 14,
            "fan": 33,
            "ack": 34,
            "reset": 35,
        }
        for name in PIN_FIELDS:
            n = _int(p, name, "pins.", 0, 39, defaults[name])
            for other, m in used.items():
                if m == n:
                    raise ConfigError("pins." + name, "GPIO %d is already used by %s" % (n, other))
            used["pins." + name] = n
            self.pins[name] = n
        self.pins["buttons_active_low"] = _get(p, "buttons_active_low", "pins.", (bool,), True)
        self.pins["reset_hold_ms"] = _int(p, "reset_hold_ms", "pins.", 0, 10000, 1000)

        lk = _get(d, "link", "", (dict,), {})
        w = "link."
        lkind = _get(lk, "kind", w, (str,), "uart")
        if lkind not in ("uart", "tcp", "none"):
            raise ConfigError(w + "kind", "must be uart, tcp or none")
        self.link = {
            "kind": lkind,
            "uart": _int(lk, "uart", w, 0, 2, 1),
            "baud": _int(lk, "baud", w, 1200, 921600, 115200),
            "path": _get(lk, "path", w, (str,)),
            "host": _get(lk, "host", w, (str,)),
            "port": _int(lk, "port", w, 1, 65535, 7700),
            "ssid": _get(lk, "ssid", w, (str,)),
            "password": _get(lk, "password", w, (str,)),
            "resend_ms": _int(lk, "resend_ms", w, 200, 60000, 3000),
            "window": _int(lk, "window", w, 1, 16, 4),
            # ESP32 UART1's default pins are the SPI flash's: the link needs pins of its own
            "tx": _int(lk, "tx", w, 0, 39, 22),
            "rx": _int(lk, "rx", w, 0, 39, 21),
        }
        if lkind == "tcp" and not self.link["host"]:
            raise ConfigError(w + "host", "required for a tcp link")
        if lkind == "uart" and self.link["path"] is None:  # a real UART, not a pty
            for name in ("tx", "rx"):
                n = self.link[name]
                for other, m in used.items():
                    if m == n:
                        raise ConfigError(w + name, "GPIO %d is already used by %s" % (n, other))
                used[w + name] = n

    def digest_hex(self):
        return "".join("%02x" % b for b in self.digest)

    def plain(self):
        """The validated values on an object of a tiny class, so that this module (and the
        profile parser) can be dropped from memory once the config is loaded."""
        from gasguard.start import Values

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


def load(path, key_path=None):
    """Read and validate the config file (and the key file, when there is one)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise ConfigError("config", "no config file at %s" % path) from None
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise ConfigError("config", "not valid JSON (%s)" % e) from None
    key = None
    if key_path is not None:
        try:
            with open(key_path, "rb") as f:
                key = bytes.fromhex(f.read().decode().strip())
        except OSError:
            key = None
        except ValueError:
            raise ConfigError("key", "key file is not hexadecimal") from None
    return Config(d, key, raw).plain()
