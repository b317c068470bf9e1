"""`gasguard config check FILE`: a device config against its schema, the firmware's own validator
and the install rules an inspector applies (docs/design.md §1: GB 15322.1-2019, GB 50028
§10.8, CJJ/T 146-2011, GB 16808-2025). Every finding at once, each naming the field and the rule.

Three layers, one report:
- protocol/schemas/device-config.schema.json: every key the firmware accepts with its type and
  bounds, and the install block; unknown keys are refused ("did you mean ...").
- the firmware's validator (firmware/lib/gasguard/config.py, collecting every error): what the
  board refuses at boot, including what a schema cannot state (each GPIO and address once, a
  high set point above the low one, a profile that can read the high set point).
- the install rules, on the config's "install" block (which the firmware ignores):

  "install": {"ceiling_m": 3.2, "backup_power": false, "valve_installed": "2026-09-15",
              "detectors": [{"address": 1, "location": "...", "mount_height_m": 3.0,
                             "distance_m": 2.5, "above_appliance": false,
                             "installed": "2026-09-15"}]}

Given several files or a site directory, `gasguard config check` checks each device config so
and then the site as a whole (tools/installer/sitecheck.py: keys, ids, heartbeats, links).

`gasguard flash` refuses exactly what this refuses; its --override covers only install-rule
findings (`Finding.overridable`), never what the board itself would refuse.
"""

from __future__ import annotations

import datetime
import difflib
import errno
import json
import os
import re
import stat
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from gasguard.gateway import files
from gasguard.tools import device

NG_FROM_CEILING_M = 0.3  # natural gas rises: within 0.3 m of the ceiling
LPG_FROM_FLOOR_M = 0.3  # LPG sinks: within 0.3 m of the floor
MAX_DISTANCE_M = {"ng": 8.0, "lpg": 4.0}  # horizontally from the appliance or valve it guards
HIGH_ALARM_PCT = 50  # GB 15322.1-2019: the high alarm at 50 %LEL
DETECTOR_LIFE_Y = 3  # commercial point detector service life
VALVE_LIFE_Y = 10
WARN_BEFORE_DAYS = 90  # a replacement needs ordering and fitting
GAS_NAMES = {"ng": "natural gas", "lpg": "LPG"}
PIN_FIELDS = (
    "valve.pin", "valve.position_pin", "bus.tx", "bus.rx", "bus.de", "pins.buzzer", "pins.red",
    "pins.yellow", "pins.green", "pins.fan", "pins.ack", "pins.reset", "link.tx", "link.rx",
)  # fmt: skip
# ESP32 (WROOM/WROVER): 6-11 are the SPI flash; 34-39 are input only
FLASH_GPIOS = range(6, 12)
NO_GPIOS = (20, 24, 28, 29, 30, 31)  # not bonded out on the ESP32
INPUT_ONLY = range(34, 40)
OUTPUT_FIELDS = ("valve.pin", "bus.tx", "bus.de", "pins.buzzer", "pins.red", "pins.yellow",
                 "pins.green", "pins.fan", "link.tx")  # fmt: skip
SCHEMA = "device-config.schema.json"
BOARD_REFUSES = "the board refuses it at boot"
FIRMWARE_RULE = "firmware validator: " + BOARD_REFUSES
TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "text",
              "object": "an object", "array": "a list", "boolean": "true or false",
              "null": "null"}  # fmt: skip


class Finding:
    def __init__(
        self, level: str, field: str, rule: str, message: str, overridable: bool = False
    ) -> None:
        self.level = level  # "error" or "warning"
        self.field = field
        self.rule = rule
        self.message = message
        # an install-rule finding an installer may flash against with --override; never one the
        # board itself refuses, nor an electrical impossibility (a flash or input-only GPIO)
        self.overridable = overridable

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "field": self.field,
            "rule": self.rule,
            "message": self.message,
            "overridable": self.overridable,
        }

    def __str__(self) -> str:
        return "%-7s %s: %s [%s]" % (self.level, self.field, self.message, self.rule)


class ConfigFileError(ValueError):
    """A file that is not a config at all (unreadable, too big, not JSON): exit code 2."""


def _firmware_config():
    """The firmware's config validator, loaded from firmware/ (it is plain Python)."""
    return device.load_firmware_module("config")


def max_bytes() -> int:
    return _firmware_config()._MAX_BYTES


# --- reading the file ------------------------------------------------------------------------


def _not_json_hint(text: str) -> str:
    # comments first (a gateway config opens with some): what follows them tells the format
    lines = [ln.strip() for ln in text.splitlines()]
    body = "\n".join(ln for ln in lines if ln and not ln.startswith("#"))
    if re.match(r"[A-Za-z_][\w.-]*\s*:(\s|$)", body) or body.startswith("---"):
        return " (this looks like YAML)"
    if re.match(r"(\[\[?[\w.\"-]+\]|[A-Za-z_][\w.-]*\s*=)", body):
        tables = set(re.findall(r"(?m)^\[+\s*([\w-]+)", body))
        if "gateway" in tables:
            return " (this looks like a gateway config (TOML); give a device config (JSON))"
        if "keys" in tables:
            return " (this looks like the gateway's keys file (TOML); give a device config (JSON))"
        return " (this looks like TOML)"
    return ""


def parse(raw: bytes) -> Any:
    """The config from a file's bytes, as strictly as JSON says (the board's parser accepts
    trailing commas and leading zeros; what it reads, this reads the same)."""
    if len(raw) > max_bytes():
        raise ConfigFileError(
            "%d bytes: a config is at most %d bytes (the board reads no more; a 23 KB one ran "
            "it out of memory)" % (len(raw), max_bytes())
        )
    if raw.startswith(b"\xef\xbb\xbf"):  # editors on Windows add one; the board skips it too
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigFileError(
            "configs are JSON in UTF-8: byte 0x%02x at offset %d is not UTF-8"
            % (raw[e.start], e.start)
        ) from None
    dupes: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                dupes.append(k)
            seen[k] = v
        return seen

    def constant(name: str) -> Any:
        raise ValueError("%s is not a JSON number" % name)

    try:
        cfg = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except RecursionError:
        raise ConfigFileError("configs are JSON: this one is nested too deep") from None
    except ValueError as e:
        if text.lstrip()[:1] in ("{", "["):  # meant as JSON: say where it breaks
            raise ConfigFileError("not valid JSON: %s" % e) from None
        raise ConfigFileError("configs are JSON%s" % _not_json_hint(text)) from None
    if dupes:
        raise ConfigFileError(
            "key %s appears twice in one object: the board would silently use the last"
            % ", ".join(repr(k) for k in sorted(set(dupes)))
        )
    return cfg


def not_regular(path: Path) -> str | None:
    """Why path cannot be read as a regular file (a FIFO, a device, a socket, a symlink loop, a
    dangling link), or None if it can. Never opens the file: a FIFO would block, a device never
    end."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        return "cannot read (%s)" % (e.strerror or e)
    if not stat.S_ISREG(st.st_mode):
        return "%s, not a regular file" % files.kind(st.st_mode)
    return None


def read_regular(path: Path, cap: int, what: str) -> bytes:
    """A regular file's bytes, at most cap of them: the size is checked before reading, and a
    FIFO, device or socket is refused without waiting on it (ConfigFileError)."""
    try:
        return files.read_regular(path, cap)
    except files.Refused as e:
        if e.size is not None:
            raise ConfigFileError(_too_big(e.size, cap, what, e.more)) from None
        raise ConfigFileError(str(e)) from None


def _too_big(n: int, cap: int, what: str, more: bool = False) -> str:
    if what == "config":
        return (
            "%d bytes%s: a config is at most %d bytes (the board reads no more; a 23 KB one ran "
            "it out of memory)" % (n, " or more" if more else "", cap)
        )
    return "%d bytes%s: a %s is at most %d bytes" % (n, " or more" if more else "", what, cap)


def read_file(path: Path) -> tuple[bytes, Any]:
    """The file's bytes and the config in them; ConfigFileError says why there is none."""
    raw = read_regular(path, max_bytes(), "config")
    return raw, parse(raw)


# --- the schema ------------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    return json.loads(resources.files("gasguard.protocol.schemas").joinpath(SCHEMA).read_text())


@cache
def _validator():
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(schema(), format_checker=FormatChecker())


def field_name(parts) -> str:
    out = ""
    for p in parts:
        out += "[%d]" % p if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def _join(base: str, key: str) -> str:
    key = key or repr(key)  # an empty key is named '' (as the firmware names it)
    return base + "." + key if base else key


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return "unknown key; did you mean %s?" % close[0]
    return "unknown key (known here: %s)" % ", ".join(known)


def schema_errors(cfg: Any) -> list[tuple[str, str, str]]:
    """(field, message, rule) for each way cfg breaks the schema, one per field."""
    out: dict[str, tuple[str, str, str]] = {}

    def add(field: str, message: str, where: Any) -> None:
        desc = where.get("description") if isinstance(where, dict) else None
        out.setdefault(field, (field, message, "config schema" + (": " + desc if desc else "")))

    for e in _validator().iter_errors(cfg):
        base = field_name(e.absolute_path)
        # a [low, high] pair is one field, for the firmware as for the installer
        base = re.sub(r"((?:^|\.)(?:raw_range|valid_tenths))\[\d+\]$", r"\1", base)
        kw, value, inst = e.validator, e.validator_value, e.instance
        if "propertyNames" in e.schema_path:  # a key's name: the path stops at its object
            if kw == "not" and "enum" in value:
                add(_join(base, inst), "not used with the kind or type given beside it", {})
            else:
                add(_join(base, inst), "not a valid key here: %s" % _key_rule(value), {})
        elif kw == "additionalProperties":
            known = sorted(e.schema.get("properties", {}))
            for k in inst:
                if k not in known:
                    add(_join(base, k), _did_you_mean(k, known), e.schema)
        elif kw == "required":
            for k in value:
                if isinstance(inst, dict) and k not in inst:
                    add(_join(base, k), "missing (required)", e.schema)
        else:
            add(base or "config", _message(kw, value, inst), e.schema)
    return list(out.values())


def _key_rule(value: Any) -> str:
    return "a number of at most %d digits in range" % value.get("maxLength", 5)


def _message(kw: str, value: Any, inst: Any) -> str:
    shown = json.dumps(inst)[:60]
    if kw == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be %s, not %s" % (" or ".join(TYPE_WORDS[k] for k in kinds), shown)
    if kw == "minimum":
        return "%s is below the minimum %s" % (shown, value)
    if kw == "maximum":
        return "%s is above the maximum %s" % (shown, value)
    if kw == "enum":
        return "%s is not one of %s" % (shown, ", ".join(json.dumps(v) for v in value))
    if kw in ("minLength", "maxLength"):
        return "must be %s %d characters" % ("at least" if kw == "minLength" else "at most", value)
    if kw == "minItems":
        return "needs at least %d item%s" % (value, "" if value == 1 else "s")
    if kw == "maxItems":
        return "takes at most %d items" % value
    if kw == "minProperties":
        return "must not be empty"
    if kw == "format":
        return "%s is not a real %s (YYYY-MM-DD)" % (shown, value)
    if kw == "not" and value == {"enum": list(FLASH_GPIOS) + list(NO_GPIOS)}:
        return "the ESP32 has no GPIO %s to give (6-11: its SPI flash)" % shown
    if kw in ("pattern", "not"):
        return "%s is not allowed here (see the rule)" % shown
    return "%s breaks the schema's %s rule" % (shown, kw)


# --- the install rules -----------------------------------------------------------------------


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _num(v: Any) -> bool:
    """A number the rules can reason about. NaN, infinities and magnitudes no site has (a
    100-digit height) are left to the schema's bounds, which report them."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and -1e6 <= v <= 1e6


def _address(v: Any) -> int | None:
    """A Modbus address as the board reads it (JSON's 1.0 is 1), or None."""
    if _num(v) and v == int(v):
        return int(v)
    return None


def _length(v: Any) -> bool:
    """A height or distance in metres the rules can reason about (negative: the schema's)."""
    return _num(v) and v >= 0


def _date(v: Any) -> datetime.date | None:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
        return None
    try:
        return datetime.date.fromisoformat(v)
    except ValueError:
        return None


def _not_a_date(v: Any) -> str:
    if v is None:
        return "missing: the date it went in (YYYY-MM-DD)"
    return "%s is not a date: write it as YYYY-MM-DD" % json.dumps(v, ensure_ascii=False)[:40]


def _years_later(d: datetime.date, years: int) -> datetime.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def install_rules(cfg: dict[str, Any], today: datetime.date) -> list[Finding]:
    """The inspector's rules: placement, thresholds, valve kind vs power, pins, service life.
    Robust to any JSON: a value of the wrong type is the schema's finding, not a crash here."""
    out: list[Finding] = []

    def err(field: str, rule: str, msg: str, overridable: bool = True) -> None:
        out.append(Finding("error", field, rule, msg, overridable))

    def warn(field: str, rule: str, msg: str) -> None:
        out.append(Finding("warning", field, rule, msg, True))

    gas = cfg.get("gas")
    dets = cfg.get("detectors") if isinstance(cfg.get("detectors"), list) else []
    gases = {"ng": ("methane",), "lpg": ("propane", "butane", "lpg")}

    # -- detector gas type against the site's gas
    for i, d in enumerate(dets):
        if isinstance(d, dict) and gas in gases and d.get("gas") not in gases[gas]:
            err(
                "detectors[%d].gas" % i,
                "gas type (GB 50028 §10.8.2)",
                "a %s sensor cannot detect %s; use %s"
                % (d.get("gas"), GAS_NAMES[gas], " or ".join(gases[gas])),
            )

    # -- thresholds within the standard's range
    low = _get(cfg, "alarm.low_alarm_pct")
    high = _get(cfg, "alarm.high_alarm_pct")
    if _num(low) and not 1 <= low <= 25:
        err(
            "alarm.low_alarm_pct",
            "alarm set points (GB 15322.1-2019)",
            "low alarm %s %%LEL is outside the adjustable range 1-25 %%LEL" % low,
        )
    if _num(high) and high != HIGH_ALARM_PCT:
        err(
            "alarm.high_alarm_pct",
            "alarm set points (GB 15322.1-2019)",
            "high alarm must be 50 %%LEL, not %s" % high,
        )

    # -- placement
    inst = cfg.get("install")
    if not isinstance(inst, dict):
        if inst is None:
            err(
                "install", "placement record", "missing: where each detector is mounted is unknown"
            )
        inst = {}
    ceiling = inst.get("ceiling_m")
    if ceiling is not None and not _length(ceiling):
        ceiling = False  # there, but the schema's finding: no rule reasons from it
    placed: dict[Any, tuple[int, dict]] = {}
    records = inst.get("detectors")
    for j, p in enumerate(records if isinstance(records, list) else []):
        if isinstance(p, dict) and _address(p.get("address")) is not None:
            placed[_address(p["address"])] = (j, p)
    for d in dets:
        if not isinstance(d, dict):
            continue
        addr = _address(d.get("address"))
        if addr is None or addr not in placed:
            err(
                "install.detectors",
                "placement record",
                "no placement for the detector at address %s" % json.dumps(d.get("address")),
            )
            continue
        j, p = placed[addr]
        w = "install.detectors[%d]." % j
        h = p.get("mount_height_m")
        if h is None:
            err(w + "mount_height_m", "placement record", "missing: height above the floor")
        elif not _length(h):
            pass  # the schema's finding (its type or bounds)
        elif _length(ceiling) and h > ceiling:
            err(
                w + "mount_height_m",
                "placement record",
                "%.2f m is above the %.2f m ceiling" % (h, ceiling),
            )
        elif gas == "ng":
            if ceiling is None:
                err("install.ceiling_m", "placement record", "missing: needed for natural gas")
            elif _length(ceiling) and ceiling - h > NG_FROM_CEILING_M:
                err(
                    w + "mount_height_m",
                    "mounting height, natural gas (GB 50028 §10.8.2: within 0.3 m of the ceiling)",
                    "%.2f m below the %.2f m ceiling; natural gas rises, mount it within 0.3 m"
                    % (ceiling - h, ceiling),
                )
        elif gas == "lpg" and h > LPG_FROM_FLOOR_M:
            err(
                w + "mount_height_m",
                "mounting height, LPG (GB 50028 §10.8.2: within 0.3 m of the floor)",
                "%.2f m above the floor; LPG sinks, mount it within 0.3 m" % h,
            )
        dist = p.get("distance_m")
        limit = MAX_DISTANCE_M.get(gas) if isinstance(gas, str) else None
        if dist is None:
            err(w + "distance_m", "placement record", "missing: distance from the appliance")
        elif not _length(dist):
            pass  # the schema's finding
        elif limit is not None and dist > limit:
            err(
                w + "distance_m",
                "horizontal distance (GB 50028 §10.8.2: %s ≤ %g m)" % (GAS_NAMES[gas], limit),
                "%.1f m from the appliance; at most %g m for %s" % (dist, limit, GAS_NAMES[gas]),
            )
        if p.get("above_appliance") is True:
            err(
                w + "above_appliance",
                "not above the appliance (CJJ/T 146-2011)",
                "directly above the appliance: fumes and heat give false readings; move it aside",
            )
        # -- service life
        when = _date(p.get("installed"))
        if when is None:
            err(w + "installed", "service life", _not_a_date(p.get("installed")))
        else:
            _life(err, warn, w + "installed", "detector", when, DETECTOR_LIFE_Y, today)
    vwhen = _date(inst.get("valve_installed"))
    if inst and vwhen is None:
        err("install.valve_installed", "service life", _not_a_date(inst.get("valve_installed")))
    elif vwhen is not None:
        _life(err, warn, "install.valve_installed", "valve", vwhen, VALVE_LIFE_Y, today)

    # -- valve kind against backup power
    if _get(cfg, "valve.kind") == "latching" and inst.get("backup_power") is not True:
        err(
            "install.backup_power",
            "valve kind vs power (GB 50028 §10.8.4: the valve must close when power fails)",
            "a latching valve stays open without power: the site needs backup power "
            "(UPS) for the controller",
        )

    # -- pins: real and output-capable (an ESP32 cannot be talked out of these: no override)
    used: dict[int, str] = {}
    link_real = _get(cfg, "link.kind") in (None, "uart") and _get(cfg, "link.path") is None
    for f in PIN_FIELDS:
        if f.startswith("link.") and not link_real:
            continue
        n = _get(cfg, f)
        if f in ("link.tx", "link.rx") and n is None:
            n = 22 if f == "link.tx" else 21
        if not isinstance(n, int) or isinstance(n, bool):
            continue
        if n in FLASH_GPIOS:
            err(f, "pin assignment (ESP32)", "GPIO %d belongs to the SPI flash" % n, False)
        if n in NO_GPIOS:
            err(f, "pin assignment (ESP32)", "the ESP32 has no GPIO %d" % n, False)
        if f in OUTPUT_FIELDS and n in INPUT_ONLY:
            err(
                f,
                "pin assignment (ESP32)",
                "GPIO %d is input only: it cannot drive %s" % (n, f),
                False,
            )
        if n in used:
            err(f, "unique pins", "GPIO %d is also %s" % (n, used[n]), False)
        else:
            used[n] = f
    return out


def _life(err, warn, field, what, when, years, today) -> None:
    if when > today:  # a typo (9998) or a wrong --today: no life can be counted from it
        err(field, "service life", "%s is after today (%s): the date it went in?" % (when, today))
        return
    end = _years_later(when, years)
    left = (end - today).days
    rule = "service life (%s: %d years)" % (what, years)
    if left < 0:
        err(field, rule, "the %s reached its end of life on %s: replace it" % (what, end))
    elif left <= WARN_BEFORE_DAYS:
        warn(field, rule, "the %s reaches its end of life on %s (%d days)" % (what, end, left))


# --- all three -------------------------------------------------------------------------------


def firmware_errors(cfg: Any, key: bytes | None = None) -> list[tuple[str, str]]:
    """(field, reason) for everything the board refuses at boot, all at once. Without key_hex
    the key is taken to come from the key file beside the config."""
    fw = _firmware_config()
    if key is None and not (isinstance(cfg, dict) and "key_hex" in cfg):
        key = bytes(16)
    return [(e.field, e.reason) for e in fw.collect(cfg, key)]


def check(cfg: Any, today: datetime.date | None = None) -> list[Finding]:
    """Every finding for one device config (parsed from its JSON file), one per field and rule:
    the install rules first (their wording names the standard), then the schema, then what
    only the firmware's validator finds; a field the board refuses is never overridable."""
    today = today or datetime.date.today()
    if not isinstance(cfg, dict):
        return [Finding("error", "config", "format", "the top level must be a JSON object")]
    board = dict(firmware_errors(cfg))
    out = install_rules(cfg, today)
    fields = {f.field for f in out if f.level == "error"}
    for field, message, rule in schema_errors(cfg):
        if field not in fields:
            fields.add(field)
            out.append(Finding("error", field, rule, message))
    for field, reason in board.items():
        if field not in fields:
            fields.add(field)
            out.append(Finding("error", field, FIRMWARE_RULE, reason))
    for f in out:
        if f.field in board:
            f.overridable = False
            if f.rule != FIRMWARE_RULE:
                f.rule += "; " + BOARD_REFUSES
        elif (
            f.level == "error"
            and not f.field.startswith("install")
            and f.rule.startswith("config schema")
        ):
            f.overridable = False  # the schema is the board's rules, written down
    return out


def check_file(path: Path, today: datetime.date | None = None) -> tuple[bytes, Any, list[Finding]]:
    """The file's bytes, its config and every finding; ConfigFileError if it is not one."""
    raw, cfg = read_file(path)
    return raw, cfg, check(cfg, today)


def _refuse(message: str, as_json: bool) -> int:
    """Input that is no config or no date: exit 2, and with --json still one JSON document."""
    print("gasguard config check: %s" % message, file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message}))
    return 2


def main(paths: list[str], as_json: bool = False, today: str | None = None) -> int:
    """One device config as before; several files or a directory as a site (sitecheck)."""
    day = None
    if today is not None:
        day = _date(today)
        if day is None:
            return _refuse(
                "--today %r is not a date: write it as YYYY-MM-DD (today is %s)"
                % (today, datetime.date.today()),
                as_json,
            )
    one = Path(paths[0])
    if len(paths) > 1 or one.is_dir() or one.suffix == ".toml":
        from gasguard.tools.installer import sitecheck

        try:
            return sitecheck.main(paths, as_json, day)
        except ConfigFileError as e:
            return _refuse(str(e), as_json)
    try:
        _, _, found = check_file(one, day)
    except ConfigFileError as e:
        return _refuse("%s: %s" % (one, e), as_json)
    errors = sum(1 for f in found if f.level == "error")
    if as_json:
        print(
            json.dumps({"file": str(one), "errors": errors,
                        "findings": [f.as_dict() for f in found]})
        )  # fmt: skip
    else:
        for f in found:
            print(f)
        print(
            "%s: %d error(s), %d warning(s)%s"
            % (one, errors, len(found) - errors, "" if errors else " - fit to install")
        )
    return 1 if errors else 0


EXIT_CODES = (  # this command's part of the --help epilog (tools/exitcodes.py adds the rest)
    "here:\n  0  fit to install (warnings at most)\n  1  findings\n"
    "  2  a file that is not JSON or TOML, a directory without device configs, a date not "
    "YYYY-MM-DD"
)


def register(sub: Any) -> None:
    # `config` holds its own subcommands, so `config check --help` is the help of `config check`
    c = sub.add_parser("config", help="check device configs and a site against the install rules")
    actions = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    ck = actions.add_parser(
        "check",
        help="check device configs, or a whole site, against the install rules",
        description="Check one device config, or a site (several files or a directory of "
        "device configs, the gateway config and its keys file) as a whole.",
        epilog=EXIT_CODES,
    )
    ck.add_argument(
        "paths", nargs="+", metavar="PATH",
        help="device config (JSON), gateway config or keys file (TOML), or a site directory",
    )  # fmt: skip
    ck.add_argument("--json", action="store_true", help="print the findings as JSON only")
    ck.add_argument("--today", help="judge service life as of this date (YYYY-MM-DD)")
    ck.set_defaults(run=lambda args: main(args.paths, args.json, args.today))
