# The bump test (gasguard commission, issue 26): proof that gas closes the valve. Loaded by the
# host after the self-test, which it unloads first: the stopped firmware's heap has room for
# one of them at a time (with the gateway link configured, ~19 KB free in pieces of at most
# 1 KB once the self-test has run). Like selftest.py it uses only names the firmware has
# interned already, and keeps every other word in long strings (the same test counts them).

from time import sleep_ms, ticks_diff, ticks_ms, ticks_us

from gasguard import detectors, modbus


def alarm(i, period_ms):
    # The bump test of detector i (its place in the config): the firmware's own safety logic,
    # valve driver, indicators and RESET button, run as the loop runs them, while test gas
    # reaches the detector. Each milestone prints at once (the host guides the person, or
    # drives the virtual board's gas and button, from these): "step" 1 the valve is open, apply
    # the gas; 2 the low set point passed; 3 the high set point (the alarm); 4 the position
    # input shows closed ("ms": from 3); 5 RESET refused while gas is present; 6 the gas has
    # cleared: hold RESET; 7 reset: the valve open again. The valve ends closed whatever
    # happens.
    import gc

    import gasguard
    from gasguard import events
    from gasguard.hmi import Button, Indicators
    from gasguard.safety import Safety, Settings
    from gasguard.valve import Valve

    gc.collect()  # the self-test's objects: the room the objects below are made in
    board, cfg = gasguard.stopped
    q = events.EventQueue(32)
    s = Safety(Settings(cfg.alarm), [d[3] for d in cfg.detectors], q)
    dets = [detectors.Detector(n, d[0], d[1]) for n, d in enumerate(cfg.detectors)]
    b = cfg.bus
    poller = detectors.Poller(
        modbus.Master(board.bus(), b["baud"], b["deadline_ms"]), dets, s.sample,
        b["fail_limit"], b["fault_retry_ms"], b["stale_ms"])  # fmt: skip
    v = cfg.valve
    latching = v["kind"] == "latching"
    valve = Valve(1 if latching else 0, board.valve, board.valve_pos, v["position_open_level"],
                  v["travel_ms"], v["pulse_ms"], 2, v["knob_timeout_s"] * 1000)  # fmt: skip
    p = cfg.pins
    btn = Button(board.reset, p["buttons_active_low"], 30, p["reset_hold_ms"])
    ind = Indicators(board.red, board.yellow, board.green, board.buzzer, board.fan)
    step = 0
    peak = 0
    high = 0
    t0 = ticks_ms()
    try:
        while step < 7 and ticks_diff(ticks_ms(), t0) < period_ms:
            now = ticks_ms()
            poller.step(now, ticks_us())
            reset = btn.update(now)
            if step == 0:  # opened as a reset opens it: once every detector reads clean air
                reset = all(s.healthy)
            closed = s.step(now, 0, False, reset, valve.fault_detail if valve.fault else 0)
            valve.apply(closed, now)
            ind.show(now, s, valve)
            board.service(now)
            lvl = s.level[i]
            tenths = s.tenths[i]
            if tenths > peak:
                peak = tenths
            k = q.pop()
            while k >= 0:
                kind = q.kind[k]
                q.done()
                if step == 4 and kind == events.RESET_REFUSED:
                    step = 5
                    print('SELFTEST {"check": "bump", "result": 0, "step": 5, "lel": %d, '
                          '"ms": %d, "why": %d}'
                          % (q.tenths[k], ticks_diff(now, t0), q.detail[k]))  # fmt: skip
                elif step == 4 and kind == events.RESET:
                    step = 8  # reopened with no gas on the detector: nothing proven
                k = q.pop()
            at = ticks_diff(now, t0)
            pos = valve.state()  # from the position input where there is one
            if step == 0 and not closed and pos == 0:
                step = 1
                t0 = now
                at = 0
            elif step == 1 and lvl >= 1:
                step = 2
            elif step == 2 and lvl == 2:
                step = 3
                high = now
            elif step == 3 and pos == 1:
                step = 4
                at = ticks_diff(now, high)
            elif step == 5 and lvl == 0 and tenths < s.s.low:
                step = 6
            elif step == 6 and not closed and pos == 0:
                step = 7
            else:
                sleep_ms(cfg.loop_ms)
                continue
            if step == 4 and valve.pos is None:
                at = -1  # no position input: the closing is a command, not measured
            if step != 5:
                print('SELFTEST {"check": "bump", "result": 0, "step": %d, "lel": %d, '
                      '"ms": %d}' % (step, tenths, at))  # fmt: skip
            sleep_ms(cfg.loop_ms)
    finally:
        board.valve.value(0)
        if latching:  # the close coil, as the safe core pulses it
            board.valve.value(1)
            sleep_ms(v["pulse_ms"])
            board.valve.value(0)
        for name in ("red", "yellow", "green", "buzzer", "fan"):
            getattr(board, name).value(0)
        board.service(ticks_ms())
    print('SELFTEST {"check": "bump", "result": 0, "step": 9, "end": %d, "lel": %d, '
          '"ms": %d}' % (step, peak, ticks_diff(ticks_ms(), t0)))  # fmt: skip
    return step == 7
