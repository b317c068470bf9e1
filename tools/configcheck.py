"""`gasguard config check FILE`: a device config against the install rules an inspector applies
(../shared/DESIGN.md §1: GB 15322.1-2019, GB 50028 §10.8, CJJ/T 146-2011, GB 16808-2025).

The firmware's own validator runs first (what the board would refuse at boot), then every install
rule; each finding names the field and the rule. Placement facts live in the config's "install"
block, which the firmware ignores:

  "install": {"ceiling_m": 3.2, "backup_power": false, "valve_installed": "2026-09-15",
              "detectors": [{"address": 1, "location": "...", "mount_height_m": 3.0,
                             "distance_m": 2.5, "above_appliance": false,
                             "installed": "2026-09-15"}]}
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from gasguard.tools import micropython

NG_FROM_CEILING_M = 0.3  # natural gas rises: within 0.3 m of the ceiling
LPG_FROM_FLOOR_M = 0.3  # LPG sinks: within 0.3 m of the floor
MAX_DISTANCE_M = {"ng": 8.0, "lpg": 4.0}  # horizontally from the appliance or valve it guards
LOW_ALARM_PCT = (1, 25)  # GB 15322.1-2019: low alarm adjustable 1-25 %LEL
HIGH_ALARM_PCT = 50  # and the high alarm at 50 %LEL
DETECTOR_LIFE_Y = 3  # commercial point detector service life
VALVE_LIFE_Y = 10
WARN_BEFORE_DAYS = 90  # a replacement needs ordering and fitting
GAS_NAMES = {"ng": "natural gas", "lpg": "LPG"}
DETECTOR_GASES = {"ng": ("methane",), "lpg": ("propane", "butane", "lpg")}
PIN_FIELDS = (
    "valve.pin", "valve.position_pin", "bus.tx", "bus.rx", "bus.de", "pins.buzzer", "pins.red",
    "pins.yellow", "pins.green", "pins.fan", "pins.ack", "pins.reset", "link.tx", "link.rx",
)  # fmt: skip
# ESP32 (WROOM/WROVER): 6-11 are the SPI flash; 34-39 are input only
FLASH_GPIOS = range(6, 12)
INPUT_ONLY = range(34, 40)
OUTPUT_FIELDS = ("valve.pin", "bus.tx", "bus.de", "pins.buzzer", "pins.red", "pins.yellow",
                 "pins.green", "pins.fan", "link.tx")  # fmt: skip


class Finding:
    def __init__(self, level: str, field: str, rule: str, message: str) -> None:
        self.level = level  # "error" or "warning"
        self.field = field
        self.rule = rule
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {
            "level": self.level,
            "field": self.field,
            "rule": self.rule,
            "message": self.message,
        }

    def __str__(self) -> str:
        return "%-7s %s: %s [%s]" % (self.level, self.field, self.message, self.rule)


def _firmware_config():
    """The firmware's config validator, loaded from firmware/ (it is plain Python)."""
    return micropython.load_firmware_module("config")


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _date(v: Any) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _years_later(d: datetime.date, years: int) -> datetime.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def check(cfg: Any, today: datetime.date | None = None) -> list[Finding]:
    """Every finding for one device config (a dict parsed from the JSON file)."""
    today = today or datetime.date.today()
    out: list[Finding] = []

    def err(field: str, rule: str, msg: str) -> None:
        out.append(Finding("error", field, rule, msg))

    def warn(field: str, rule: str, msg: str) -> None:
        out.append(Finding("warning", field, rule, msg))

    if not isinstance(cfg, dict):
        err("config", "format", "the top level must be a JSON object")
        return out
    fw = _firmware_config()
    try:
        fw.Config(cfg, key=b"\0" * 16 if "key_hex" not in cfg else None)
    except fw.ConfigError as e:
        err(e.field, "firmware validator (the board refuses this config at boot)", e.reason)

    gas = cfg.get("gas")
    dets = cfg.get("detectors") if isinstance(cfg.get("detectors"), list) else []

    # -- detector gas type against the site's gas
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or gas not in DETECTOR_GASES:
            continue
        if d.get("gas") not in DETECTOR_GASES[gas]:
            err(
                "detectors[%d].gas" % i,
                "gas type (GB 50028 §10.8.2)",
                "a %s sensor cannot detect %s; use %s"
                % (d.get("gas"), GAS_NAMES[gas], " or ".join(DETECTOR_GASES[gas])),
            )

    # -- thresholds within the standard's range
    low = _get(cfg, "alarm.low_alarm_pct")
    high = _get(cfg, "alarm.high_alarm_pct")
    low = 20 if low is None else low
    high = HIGH_ALARM_PCT if high is None else high
    if isinstance(low, (int, float)) and not LOW_ALARM_PCT[0] <= low <= LOW_ALARM_PCT[1]:
        err(
            "alarm.low_alarm_pct",
            "alarm set points (GB 15322.1-2019)",
            "low alarm %s %%LEL is outside the adjustable range 1-25 %%LEL" % low,
        )
    if isinstance(high, (int, float)) and high != HIGH_ALARM_PCT:
        err(
            "alarm.high_alarm_pct",
            "alarm set points (GB 15322.1-2019)",
            "high alarm must be 50 %%LEL, not %s" % high,
        )

    # -- placement
    inst = cfg.get("install")
    if not isinstance(inst, dict):
        err("install", "placement record", "missing: where each detector is mounted is unknown")
        inst = {}
    ceiling = inst.get("ceiling_m")
    placed = {}
    for j, p in enumerate(inst.get("detectors") or []):
        if isinstance(p, dict):
            placed[p.get("address")] = (j, p)
    for d in dets:
        if not isinstance(d, dict):
            continue
        addr = d.get("address")
        if addr not in placed:
            err(
                "install.detectors",
                "placement record",
                "no placement for the detector at address %s" % addr,
            )
            continue
        j, p = placed[addr]
        w = "install.detectors[%d]." % j
        h = p.get("mount_height_m")
        if not isinstance(h, (int, float)):
            err(w + "mount_height_m", "placement record", "missing: height above the floor")
        elif gas == "ng":
            if not isinstance(ceiling, (int, float)):
                err("install.ceiling_m", "placement record", "missing: needed for natural gas")
            elif ceiling - h > NG_FROM_CEILING_M:
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
        limit = MAX_DISTANCE_M.get(gas)
        if not isinstance(dist, (int, float)):
            err(w + "distance_m", "placement record", "missing: distance from the appliance")
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
            err(w + "installed", "service life", "missing or not a date (YYYY-MM-DD)")
        else:
            _life(err, warn, w + "installed", "detector", when, DETECTOR_LIFE_Y, today)
    vwhen = _date(inst.get("valve_installed"))
    if inst and vwhen is None:
        err("install.valve_installed", "service life", "missing or not a date (YYYY-MM-DD)")
    elif vwhen is not None:
        _life(err, warn, "install.valve_installed", "valve", vwhen, VALVE_LIFE_Y, today)

    # -- valve kind against backup power
    kind = _get(cfg, "valve.kind")
    if kind == "latching":
        if inst.get("backup_power") is not True:
            err(
                "install.backup_power",
                "valve kind vs power (GB 50028 §10.8.4: the valve must close when power fails)",
                "a latching valve stays open without power: the site needs backup power "
                "(UPS) for the controller",
            )
        if _get(cfg, "valve.position_pin") is None:
            err(
                "valve.position_pin",
                "valve supervision",
                "a latching valve needs its position input wired and configured",
            )

    # -- pins: unique, real, outputs on output-capable GPIOs
    used: dict[int, str] = {}
    link_real = _get(cfg, "link.kind") in (None, "uart") and _get(cfg, "link.path") is None
    for f in PIN_FIELDS:
        if f.startswith("link.") and not link_real:
            continue
        n = _get(cfg, f)
        if f in ("link.tx", "link.rx") and n is None:
            n = 22 if f == "link.tx" else 21
        if not isinstance(n, int):
            continue
        if n in FLASH_GPIOS:
            err(f, "pin assignment (ESP32)", "GPIO %d belongs to the SPI flash" % n)
        if f in OUTPUT_FIELDS and n in INPUT_ONLY:
            err(f, "pin assignment (ESP32)", "GPIO %d is input only: it cannot drive %s" % (n, f))
        if n in used:
            err(f, "unique pins", "GPIO %d is also %s" % (n, used[n]))
        else:
            used[n] = f
    return out


def _life(err, warn, field, what, when, years, today) -> None:
    end = _years_later(when, years)
    left = (end - today).days
    rule = "service life (%s: %d years)" % (what, years)
    if left < 0:
        err(field, rule, "the %s reached its end of life on %s: replace it" % (what, end))
    elif left <= WARN_BEFORE_DAYS:
        warn(field, rule, "the %s reaches its end of life on %s (%d days)" % (what, end, left))


def main(path: str, as_json: bool = False, today: str | None = None) -> int:
    try:
        cfg = json.loads(Path(path).read_text())
    except OSError as e:
        print("gasguard config check: %s: cannot read (%s)" % (path, e.strerror), file=sys.stderr)
        return 2
    except ValueError as e:
        print("gasguard config check: %s: not valid JSON (%s)" % (path, e), file=sys.stderr)
        return 2
    day = datetime.date.fromisoformat(today) if today else None
    found = check(cfg, day)
    errors = sum(1 for f in found if f.level == "error")
    if as_json:
        print(
            json.dumps({"file": path, "errors": errors, "findings": [f.as_dict() for f in found]})
        )
    else:
        for f in found:
            print(f)
        print(
            "%s: %d error(s), %d warning(s)%s"
            % (path, errors, len(found) - errors, "" if errors else " - fit to install")
        )
    return 1 if errors else 0
