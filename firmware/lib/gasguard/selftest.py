# On-site self-test for commissioning, run from the REPL once the safety loop has been stopped
# (Ctrl-C leaves the valve closed and keeps the board and config in gasguard.stopped).
#
# The lamps, buzzer and fan are switched by the host, one at a time, and stay on while the
# installer is asked whether they saw or heard it (tools/installer/commission.py). Here, order
# matters: detectors first; the valve is only opened, for a moment, when every detector
# answered with a clean-air reading (then the host runs the bump test: gasguard/bump.py).
# Each step prints one "SELFTEST {json}" line as it finishes
# (the host, tools/installer/commission.py, reads them as they come); "result" is a number
# (0 info, 1 pass, 2 fail, 3 driven: a person must confirm it, 4 skipped). The valve ends closed
# whatever happens: a step that fails (a silent detector, the heap running short) is reported as
# a failed check and the next step still runs; the host then restarts the board.
#
# This module is loaded into the stopped firmware's fragmented heap, where a new interned name
# can need the interned names' pool to double (a 7 KB block that may not be there): it uses only
# names the firmware has already interned, or MicroPython's own, and keeps every other word in
# long strings (tests/tools/test_commission.py counts the names it adds: its module name and
# file name, nothing else).
import json
from time import sleep_ms, ticks_diff, ticks_ms, ticks_us

from micropython import const

from gasguard import detectors, modbus
from gasguard.protocol import VERSION
from gasguard.protocol.profile import NOANSWER, OK, STATE_NAMES

_PASS = const(1)
_FAIL = const(2)
_DRIVEN = const(3)
_SKIPPED = const(4)


def show(check, result, detail, body=""):
    print(
        'SELFTEST {"check": %s, "result": %d, "detail": %s%s}'
        % (json.dumps(check), result, json.dumps(detail), body)
    )
    return result


def idle(board, period_ms):
    # keep the HAL serviced while waiting (the virtual board's panel; the ESP32 needs nothing)
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < period_ms:
        board.service(ticks_ms())
        sleep_ms(10)


def poll(board, cfg):
    low = cfg.alarm.get("low_alarm_tenths", 200)
    dets = [detectors.Detector(i, d[0], d[1]) for i, d in enumerate(cfg.detectors)]
    got = [None] * len(dets)

    def sink(i, state, tenths):
        got[i] = (state, tenths)

    b = cfg.bus
    poller = detectors.Poller(modbus.Master(board.bus(), b["baud"], b["deadline_ms"]), dets, sink)
    t0 = ticks_ms()
    # a few rounds: every detector answers at least twice unless it is silent or faulty
    while ticks_diff(ticks_ms(), t0) < 3000 and not all(
        d.polls >= 2 and g is not None for d, g in zip(dets, got)
    ):
        poller.step(ticks_ms(), ticks_us())
        board.service(ticks_ms())
        sleep_ms(5)
    ok = True
    for d, g in zip(dets, got):
        name = "detector.%d" % d.address
        if g is None or g[0] == NOANSWER:
            ok = False
            why = "no answer at address %d: unplugged, unpowered or another address?"
            show(name, _FAIL, why % d.address, ', "polls": %d' % d.polls)
            continue
        state, tenths = g
        lel = ', "lel": %s' % (tenths / 10)
        if state != OK:
            ok = False
            show(name, _FAIL, "the detector reports %s" % STATE_NAMES[state], lel)
        elif tenths < 0 or tenths >= low:
            ok = False
            why = "reads %.1f %%LEL: not clean air (gas, or zero drift)"
            show(name, _FAIL, why % (tenths / 10), lel)
        else:
            show(name, _PASS, "answers, %.1f %%LEL in clean air" % (tenths / 10), lel)
    return ok


def wait(board, up, level, period_ms):
    # ms until the position input shows open (up) or closed, or -1 after period_ms
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < period_ms:
        board.service(ticks_ms())
        if (board.valve_pos.value() == level) == up:
            return ticks_diff(ticks_ms(), t0)
        sleep_ms(10)
    return -1


def valve(board, cfg, ok):  # (a name the firmware has already interned: see the header)
    # the valve against its position input, only once every detector passed
    v = cfg.valve
    if not ok:
        return show("valve", _SKIPPED, "not opened: a detector did not pass")
    pos = board.valve_pos
    level = v["position_open_level"]
    if v["kind"] == "latching":
        # it can only be opened by hand: check the trip coil closes it
        board.valve.value(1)
        idle(board, v["pulse_ms"])
        board.valve.value(0)
        if pos is None:
            return show("valve", _FAIL, "latching valve without a position input")
        t = wait(board, False, level, v["travel_ms"] + 500)
        if t < 0:
            return show("valve", _FAIL, "trip coil pulsed but the valve did not report closed")
        return show("valve", _PASS, "trip coil closes it (%d ms); open it by hand" % t)
    try:
        board.valve.value(1)  # energise: open
        if pos is None:
            idle(board, v["travel_ms"])
            return show("valve", _DRIVEN, "no position input: confirm it moved by eye")
        t_open = wait(board, True, level, v["travel_ms"] + 500)
    finally:
        board.valve.value(0)  # whatever happened: closed
    if t_open < 0:
        return show("valve", _FAIL, "energised but the position input never showed open")
    t_close = wait(board, False, level, v["travel_ms"] + 500)
    if t_close < 0:
        return show("valve", _FAIL, "de-energised but the position input never showed closed")
    return show(
        "valve",
        _PASS,
        "opens in %d ms and closes in %d ms, position input agrees" % (t_open, t_close),
        ', "open_ms": %d, "close_ms": %d' % (t_open, t_close),
    )


def run(stopped=None):
    import gasguard

    board, cfg = stopped or getattr(gasguard, "stopped", (None, None))
    if board is None:
        print('SELFTEST {"check": "setup", "result": 2, "detail": "no stopped firmware: '
              'press Ctrl-C first"}')  # fmt: skip
        return False
    about = (cfg.device_id, cfg.site, VERSION, cfg.digest_hex())
    print('SELFTEST {"check": "about", "result": 0, "device": %s, "site": %s, "fw": %s, '
          '"cfg": %s}' % tuple(json.dumps(x) for x in about))  # fmt: skip
    ok = False
    try:
        for step in range(2):
            try:
                if step == 0:
                    ok = poll(board, cfg)
                else:
                    valve(board, cfg, ok)
            except MemoryError:
                # the stopped firmware's heap is fragmented: say so, keep the valve closed
                board.valve.value(0)
                why = "the board ran out of memory: restart it, then try again"
                show(("detectors", "valve")[step], _FAIL, why)
    finally:
        board.valve.value(0)
        for name in ("red", "yellow", "green", "buzzer", "fan"):
            getattr(board, name).value(0)
    print('SELFTEST {"check": "end", "result": 0}')
    return True
