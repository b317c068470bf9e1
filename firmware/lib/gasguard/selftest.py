# On-site self-test for commissioning, run from the REPL once the safety loop has been stopped
# (Ctrl-C leaves the valve closed and keeps the board and config in gasguard.stopped).
#
# Order matters: detectors first; the valve is only opened, for a moment, when every detector
# answered with a clean-air reading. Each step prints one "SELFTEST {json}" line as it finishes
# (the host reads them as they come), and the valve ends closed whatever happens.
import json
from time import sleep_ms, ticks_diff, ticks_ms, ticks_us

from gasguard import VERSION, detectors, modbus
from gasguard.protocol.profile import NOANSWER, OK, STATE_NAMES

LAMP_MS = 700  # long enough for a person to see each one


def _idle(board, ms):
    # keep the HAL serviced while waiting (the virtual board's panel; the ESP32 needs nothing)
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < ms:
        board.service(ticks_ms())
        sleep_ms(10)


def _report(check, result, detail=None, **extra):
    r = {"check": check, "result": result}
    if detail:
        r["detail"] = detail
    r.update(extra)
    print("SELFTEST " + json.dumps(r))
    return result


def _outputs(board):
    for name in ("red", "yellow", "green", "buzzer", "fan"):
        getattr(board, name).value(0)  # all dark first, so each one is seen on its own
    _idle(board, 300)
    for name in ("red", "yellow", "green", "buzzer", "fan"):
        pin = getattr(board, name)
        pin.value(1)
        _idle(board, LAMP_MS)
        pin.value(0)
        _report(name, "driven", "on for %d ms: confirm it was seen or heard" % LAMP_MS)


def _detectors(board, cfg):
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
            _report(name, "fail", "no answer at Modbus address %d" % d.address, polls=d.polls)
            continue
        state, tenths = g
        lel = tenths / 10
        if state != OK:
            ok = False
            _report(name, "fail", "reports %s" % STATE_NAMES[state], lel=lel)
        elif tenths < 0 or tenths >= low:
            ok = False
            _report(name, "fail", "reads %.1f %%LEL: not clean air (gas, or zero drift)" % lel)
        else:
            _report(name, "pass", "answers, %.1f %%LEL in clean air" % lel, lel=lel)
    return ok


def _wait_pos(board, want_open, level, ms):
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < ms:
        board.service(ticks_ms())
        if (board.valve_pos.value() == level) == want_open:
            return ticks_diff(ticks_ms(), t0)
        sleep_ms(10)
    return -1


def _valve(board, cfg, detectors_ok):
    v = cfg.valve
    if not detectors_ok:
        return _report("valve", "skipped", "not opened: a detector did not pass")
    pos = board.valve_pos
    if v["kind"] == "latching":
        # it can only be opened by hand: check the trip coil closes it
        board.valve.value(1)
        _idle(board, v["pulse_ms"])
        board.valve.value(0)
        if pos is None:
            return _report("valve", "fail", "latching valve without a position input")
        t = _wait_pos(board, False, v["position_open_level"], v["travel_ms"] + 500)
        if t < 0:
            return _report("valve", "fail", "trip coil pulsed but the valve did not report closed")
        return _report("valve", "pass", "trip coil closes it (%d ms); open it by hand" % t)
    try:
        board.valve.value(1)  # energise: open
        if pos is None:
            _idle(board, v["travel_ms"])
            return _report("valve", "driven", "no position input: confirm it moved by eye")
        t_open = _wait_pos(board, True, v["position_open_level"], v["travel_ms"] + 500)
    finally:
        board.valve.value(0)  # whatever happened: closed
    if t_open < 0:
        return _report("valve", "fail", "energised but the position input never showed open")
    t_close = _wait_pos(board, False, v["position_open_level"], v["travel_ms"] + 500)
    if t_close < 0:
        return _report("valve", "fail", "de-energised but the position input never showed closed")
    return _report(
        "valve",
        "pass",
        "opens in %d ms and closes in %d ms, position input agrees" % (t_open, t_close),
        open_ms=t_open,
        close_ms=t_close,
    )


def run(stopped=None):
    import gasguard

    board, cfg = stopped or getattr(gasguard, "stopped", (None, None))
    if board is None:
        print(
            "SELFTEST "
            + json.dumps(
                {
                    "check": "setup",
                    "result": "fail",
                    "detail": "no stopped firmware: press Ctrl-C first",
                }
            )
        )
        return False
    print(
        "SELFTEST "
        + json.dumps(
            {
                "check": "about",
                "result": "info",
                "device": cfg.device_id,
                "site": cfg.site,
                "fw": VERSION,
                "cfg": cfg.digest_hex(),
            }
        )
    )
    try:
        _outputs(board)
        ok = _detectors(board, cfg)
        _valve(board, cfg, ok)
    finally:
        board.valve.value(0)
        for name in ("red", "yellow", "green", "buzzer", "fan"):
            getattr(board, name).value(0)
    print("SELFTEST " + json.dumps({"check": "end", "result": "info"}))
    return True
