# The safe core: the first firmware code a board runs, and the last when booting fails. Before
# any config, profile or other firmware module is read it drives the valve to its safe state
# (NC: de-energised; latching: a close pulse, confirmed by the position input) with the fault
# lamp on. It needs nothing but the board's pin map, board.json (a few integers, written by the
# firmware from a validated config and by `gasguard flash`), or the board defaults when that is
# missing or unreadable. halt() ends every boot failure the same way: valve safe, fault lamp, one
# console line naming the cause, and a defined watchdog behaviour (docs/firmware.md).
import sys
from time import sleep_ms, ticks_diff, ticks_ms

from micropython import const

_PULSES = const(3)  # close pulses for a latching valve before it is reported stuck open
_RETRY_MS = const(30000)  # a boot failure other than the config: reboot and try again
_REPEAT_MS = const(10000)  # the console line again, for whoever connects later
_REPULSE_MS = const(1000)  # a latching valve found open while halted is pulsed again after
_MAX_MAP = const(512)  # bytes: board.json is a few integers

# the GasGuard ESP32 board's wiring (docs/install.md; none on a strapping pin such as GPIO 12,
# which would set the flash voltage at reset), used when board.json cannot be read (an NC
# valve: without the pin map a latching valve is left as it is, never pulsed blindly)
DEFAULTS = {
    "valve": "nc",
    "pin": 25,
    "pos": None,
    "open": 1,
    "pulse_ms": 500,
    "travel_ms": 2000,
    "red": 19,
    "yellow": 18,
    "green": 23,
    "buzzer": 27,
    "fan": 33,
}
_OUT = ("pin", "red", "yellow", "green", "buzzer", "fan")
_RANGES = {"pulse_ms": (50, 5000), "travel_ms": (100, 30000), "open": (0, 1)}
_ESP32 = sys.platform == "esp32"


def pinmap(cfg):
    """The safe core's pin map from a validated config (what board.json holds)."""
    v = cfg.valve
    p = cfg.pins
    return {
        "valve": v["kind"],
        "pin": v["pin"],
        "pos": v["position_pin"],
        "open": v["position_open_level"],
        "pulse_ms": v["pulse_ms"],
        "travel_ms": v["travel_ms"],
        "red": p["red"],
        "yellow": p["yellow"],
        "green": p["green"],
        "buzzer": p["buzzer"],
        "fan": p["fan"],
    }


def _load(path):
    # (pin map, None) or (DEFAULTS, why): only small integers in their ranges are believed
    import os

    try:
        if os.stat(path)[6] > _MAX_MAP:
            return DEFAULTS, "board.json too big"
        import json

        with open(path) as f:
            m = json.load(f)
    except OSError:
        return DEFAULTS, "no board.json"
    except (ValueError, MemoryError):
        return DEFAULTS, "board.json unreadable"
    if not isinstance(m, dict) or m.get("valve") not in ("nc", "latching"):
        return DEFAULTS, "board.json: bad valve kind"
    for k in DEFAULTS:
        v = m.get(k)
        if k == "valve" or (k == "pos" and v is None):
            continue
        lo, hi = _RANGES.get(k, (0, 39))  # the config's own bounds: a 0 ms pulse trips nothing
        if type(v) is not int or not lo <= v <= hi:
            return DEFAULTS, "board.json: bad " + k
    if m["valve"] == "latching" and m["pos"] is None:
        return DEFAULTS, "board.json: latching valve without position input"
    outs = [m[k] for k in _OUT]
    for n in outs:
        # each output on its own pin (a lamp sharing the valve's would energise it), none on
        # the SPI flash's GPIOs (6-11) or the ESP32's input-only ones (34-39)
        if outs.count(n) > 1 or 6 <= n <= 11 or n >= 34 or n == m["pos"]:
            return DEFAULTS, "board.json: GPIO %d cannot be that output" % n
    if m["pos"] is not None and 6 <= m["pos"] <= 11:
        return DEFAULTS, "board.json: bad pos"
    return m, None


class _Outputs:
    """The valve, lamps, buzzer and fan as plain pins, and the position input."""

    def __init__(self, m):
        self.m = m
        if _ESP32:
            import machine

            out = machine.Pin.OUT
            self.pins = {k: machine.Pin(m[k], out, value=0) for k in _OUT}
            self.pos = machine.Pin(m["pos"], machine.Pin.IN) if m["pos"] is not None else None
            self.wdt = None
            self.panel = None
        else:  # the virtual board: its panel, which the harness is connected to
            from gasguard.hal.unix import panel

            pn = self.panel = panel()
            self.pins = {k: pn.pins["valve" if k == "pin" else k] for k in _OUT}
            self.pos = pn.pins["valve_pos"] if m["pos"] is not None else None
            self.wdt = pn  # the harness restarts us when the feeds stop

    def idle(self, ms):
        t0 = ticks_ms()
        while True:
            if self.panel is not None:
                self.panel.wdt_fed = ticks_ms()
                self.panel.service(ticks_ms())
            elif self.wdt is not None:
                self.wdt.feed()
            left = ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                return
            sleep_ms(50 if left > 50 else left)

    def is_open(self):
        return self.pos is not None and self.pos.value() == self.m["open"]


def _drive(o, lamps):
    # valve safe: NC de-energised; latching pulsed shut until the position input agrees
    m = o.m
    o.pins["pin"].value(0)
    for k in ("green", "buzzer", "fan"):
        o.pins[k].value(0)
    for k in ("red", "yellow"):
        o.pins[k].value(lamps)
    o.idle(0)
    if m["valve"] != "latching":
        return None
    for _ in range(_PULSES):
        if not o.is_open():
            return None
        o.pins["pin"].value(1)
        o.idle(m["pulse_ms"])
        o.pins["pin"].value(0)
        o.idle(0)
        t0 = ticks_ms()
        while o.is_open() and ticks_diff(ticks_ms(), t0) < m["travel_ms"]:
            o.idle(20)
    return "latching valve still open after %d close pulses" % _PULSES if o.is_open() else None


_STATE: list = []  # [outputs, pin map warning]: kept from start() for halt()


def start(path):
    """At power-up, before anything else: outputs safe, fault lamp on while booting. path:
    the pin map, board.json."""
    m, why = _load(path)
    try:
        o = _Outputs(m)
    except Exception as e:  # noqa: BLE001 - a pin the hardware refuses: the board's wiring
        why = "board.json: %s" % e
        o = _Outputs(DEFAULTS)
    _STATE[:] = [o, why]
    stuck = _drive(o, 1)
    if stuck:
        print("VALVE FAULT at boot: %s" % stuck)
    return o


def _said(cause, why, stuck):
    # what the console line says of the valve: only what the safe core knows
    if stuck:
        return "%s; VALVE FAULT: %s" % (cause, stuck)
    if why:
        return "%s; valve output off on the board's default GPIO %s (pin map: %s; a latching " \
            "valve is not pulsed without one)" % (cause, DEFAULTS["pin"], why)
    return cause + "; valve closed"


def halt(cause, config=False, stopped=False):
    """Every boot failure ends here: valve safe, red and yellow lamps, one console line: the
    cause and the valve's state (repeated for whoever connects later). A latching valve stays
    watched: reopened by hand (the knob pulled to get gas back), it is pulsed shut again. A bad
    config waits for the installer (Ctrl-C gives the REPL); any other failure reboots after 30 s
    to try again (a fragmented heap, say), closed throughout. On the ESP32 the hardware watchdog
    is fed while it waits. stopped: the boot was interrupted from the console: the REPL at once."""
    if not config and not stopped:
        try:  # a firmware that does not load: the previous install, if the board has one
            import fallback

            fallback.run(cause)
        except Exception:  # noqa: BLE001 - none to go back to (or no room): halt here
            pass
    o, why = _STATE if _STATE else (None, None)
    if o is None:  # failed before start() ran (cannot happen from main.py): best effort
        o = _Outputs(DEFAULTS)
    if _ESP32 and o.wdt is None:
        import machine

        o.wdt = machine.WDT(timeout=5000)  # a hang in here reboots, closed
    stuck = _drive(o, 1)
    watch = o.m["valve"] == "latching" and o.pos is not None
    try:
        if stopped:
            raise KeyboardInterrupt
        t0 = last = ticks_ms()
        while True:
            print(_said(cause, why, stuck))
            for _ in range(_REPEAT_MS // 100):
                o.idle(100)
                if watch and o.is_open() and ticks_diff(ticks_ms(), last) >= _REPULSE_MS:
                    # reopened by hand, or still stuck: shut it again (a stuck one at most
                    # every _REPULSE_MS, so its coil is not driven without a rest)
                    last = ticks_ms()
                    stuck = _drive(o, 1)
                    print(_said(cause, why, stuck))
            if not config and ticks_diff(ticks_ms(), t0) >= _RETRY_MS:
                print("rebooting to try again")
                if _ESP32:
                    import machine

                    machine.reset()
                sys.exit(4)  # the virtual board: its harness restarts us
    except KeyboardInterrupt:  # the installer is here to fix it: give them the REPL
        print("STOPPED from the console: valve closed; reset the board to resume")
        _STATE[:] = []
        if o.panel is not None:
            o.panel.maintenance()
        elif _ESP32:
            import machine

            wdt = o.wdt or machine.WDT(timeout=5000)
            t = machine.Timer(0)
            t.init(period=500, mode=machine.Timer.PERIODIC, callback=lambda _t: wdt.feed())
