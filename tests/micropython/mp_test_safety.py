# The safety logic alone (firmware/lib/gasguard/safety.py), in the MicroPython VM: no bus, no pins,
# just samples, button edges and the decisions they must produce.
from gasguard import events as ev
from gasguard.protocol.profile import FAULT, NOANSWER, OK, WARMUP
from gasguard.safety import HIGH, LOW, NONE, Safety, Settings


def _make(n=1, **alarm):
    q = ev.EventQueue(32)
    return Safety(Settings(alarm), [True] * n, q), q


def _kinds(q):
    out = []
    while q.pop() >= 0:
        out.append(q.kind[q.head])
        q.done()
    return out


def _healthy(s, n=1, tenths=0):
    for i in range(n):
        s.sample(i, OK, tenths)


def _reset(s, now=0):
    return s.step(now, 0, False, True, False)


def test_boots_closed_and_reset_opens_when_healthy():
    s, q = _make()
    assert s.step(0, 0, False, False, False) is True  # closed at power-up
    assert _reset(s) is True  # nothing polled yet: refused
    assert ev.RESET_REFUSED in _kinds(q)
    _healthy(s)
    assert _reset(s) is False
    assert ev.RESET in _kinds(q)


def test_high_alarm_closes_at_once_and_latches():
    s, q = _make()
    _healthy(s)
    _reset(s)
    _kinds(q)
    s.sample(0, OK, 600)
    assert s.step(10, 0, False, False, False) is True
    assert _kinds(q) == [ev.ALARM_HIGH, ev.VALVE_CLOSED]
    for _ in range(5):
        s.sample(0, OK, 0)
    assert s.step(20, 0, False, False, False) is True  # still latched after the gas cleared
    assert s.level[0] == NONE


def test_low_alarm_needs_two_samples_and_hysteresis_to_clear():
    s, q = _make()
    _healthy(s)
    s.sample(0, OK, 210)
    assert s.level[0] == NONE  # one sample is not enough (debounce_low = 2)
    s.sample(0, OK, 210)
    assert s.level[0] == LOW
    for _ in range(5):
        s.sample(0, OK, 185)  # below 20 % but inside the 2 % hysteresis band
    assert s.level[0] == LOW
    s.sample(0, OK, 150)
    s.sample(0, OK, 150)
    assert s.level[0] == LOW  # debounce_clear = 3
    s.sample(0, OK, 150)
    assert s.level[0] == NONE


def test_acknowledge_silences_until_escalation_and_never_opens():
    s, q = _make()
    _healthy(s)
    _reset(s)
    s.sample(0, OK, 250)
    s.sample(0, OK, 250)
    s.step(0, 0, False, False, False)
    assert s.buzzer() == 1
    assert s.step(10, 0, True, False, False) is False  # ack: still open (low alarm only)
    assert s.buzzer() == 0
    s.sample(0, OK, 550)
    assert s.step(20, 0, False, False, False) is True
    assert s.site_level == HIGH and s.buzzer() == 1  # escalation sounds again


def test_reset_refused_while_gas_at_low_level():
    s, q = _make()
    _healthy(s)
    s.sample(0, OK, 600)
    s.step(0, 0, False, False, False)
    for _ in range(4):
        s.sample(0, OK, 220)
    assert _reset(s) is True
    assert ev.RESET_REFUSED in _kinds(q)


def test_faults_are_never_safe_and_close_by_policy():
    for state in (WARMUP, FAULT, NOANSWER):
        s, q = _make()
        _healthy(s)
        _reset(s)
        s.sample(0, state, 0)
        assert s.step(0, 0, False, False, False) is True, state
        assert _reset(s) is True


def test_fault_policy_off_keeps_valve_open_but_blocks_reset():
    q = ev.EventQueue(32)
    s = Safety(Settings({}), [True, False], q)
    _healthy(s, 2)
    _reset(s)
    s.sample(1, NOANSWER, 0)
    assert s.step(0, 0, False, False, False) is False
    assert s.fault and s.buzzer() == 2


def test_two_detector_confirmation():
    q = ev.EventQueue(32)
    s = Safety(Settings({"confirm_low": 2, "close_on_low": True}), [True, True], q)
    _healthy(s, 2)
    _reset(s)
    s.sample(0, OK, 250)
    s.sample(0, OK, 250)
    assert s.step(0, 0, False, False, False) is False
    assert s.any_alarm and s.site_level == NONE
    s.sample(1, OK, 260)
    s.sample(1, OK, 260)
    assert s.step(10, 0, False, False, False) is True


def test_valve_fault_closes_and_blocks_reset():
    s, q = _make()
    _healthy(s)
    _reset(s)
    assert s.step(0, 0, False, False, True) is True
    assert ev.VALVE_FAULT in _kinds(q)
    assert s.step(10, 0, False, True, True) is True
