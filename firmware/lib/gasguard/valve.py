# Shut-off valve driver with supervision through the optional position input.
#  nc:       normally-closed solenoid, energised to stay open. De-energising closes it, and so does
#            any power loss: fail-safe by physics.
#  latching: a pulse on the coil trips a spring latch that closes it; a person reopens it by
#            pulling the knob. It stays open without power, so the position input is required
#            and the site needs backup power (config check enforces both).
from time import ticks_diff

from micropython import const

from gasguard.events import D_STUCK_OPEN, D_UNEXPECTED_CLOSE

NC = const(0)
LATCHING = const(1)
_OPEN = const(0)  # the states index protocol catalogue.VALVE_STATES
_CLOSED = const(1)
_FAULT = const(2)


class Valve:
    def __init__(
        self,
        kind,
        out,
        pos=None,
        pos_open=1,
        travel_ms=2000,
        pulse_ms=500,
        retries=2,
        knob_timeout_ms=60000,
    ):
        self.kind = kind
        self.out = out  # NC: energise to open; latching: the close coil
        self.pos = pos
        self.pos_open = pos_open
        self.travel_ms = travel_ms
        self.pulse_ms = pulse_ms
        self.retries = retries
        self.knob_timeout_ms = knob_timeout_ms
        self.closed_cmd = True
        self.fault = False
        self.fault_detail = 0
        self.mismatch_since = 0
        self.mismatch = False
        self.pulsing = False
        self.pulse_start = 0
        self.pulses = 0
        self.awaiting_knob = False
        self.knob_since = 0
        self.knob_timed_out = False
        self.out_level = -1
        self._drive(0)  # de-energised: an NC valve is closed, a latching coil is off

    def _drive(self, v):
        if v != self.out_level:
            self.out_level = v
            self.out.value(v)

    def position_open(self):
        """True/False from the position input, None without one."""
        if self.pos is None:
            return None
        return self.pos.value() == self.pos_open

    def _pulse(self, now_ms):
        self.pulsing = True
        self.pulse_start = now_ms
        self.pulses += 1
        self._drive(1)

    def apply(self, closed, now_ms):
        """Called every cycle with the safety verdict. Returns the supervision fault flag."""
        if closed and not self.closed_cmd:
            self.pulses = 0
            self.awaiting_knob = False
            if self.kind == LATCHING:
                self._pulse(now_ms)
        elif not closed and self.closed_cmd and self.kind == LATCHING:
            # Only a person can reopen a latching valve: prompt for the knob, watch the input.
            self.awaiting_knob = True
            self.knob_since = now_ms
            self.knob_timed_out = False
        self.closed_cmd = closed
        if self.kind == NC:
            self._drive(0 if closed else 1)
        elif self.pulsing and ticks_diff(now_ms, self.pulse_start) >= self.pulse_ms:
            self.pulsing = False
            self._drive(0)
        pos = self.position_open()
        if pos is None:
            return False
        if self.awaiting_knob:
            if pos:
                self.awaiting_knob = False
            elif ticks_diff(now_ms, self.knob_since) >= self.knob_timeout_ms:
                self.awaiting_knob = False
                self.knob_timed_out = True
        # a latching valve commanded open may legitimately sit closed until the knob is pulled
        wrong = pos if closed else (self.kind == NC and not pos)
        if not wrong:
            self.mismatch = False
            self.fault = False
            return False
        if not self.mismatch:
            self.mismatch = True
            self.mismatch_since = now_ms
        if ticks_diff(now_ms, self.mismatch_since) >= self.travel_ms:
            if (
                self.kind == LATCHING
                and closed
                and not self.pulsing
                and self.pulses <= self.retries
            ):
                self._pulse(now_ms)  # knob pulled while closed, or the latch did not catch
                self.mismatch_since = now_ms
            else:
                self.fault = True
                self.fault_detail = D_STUCK_OPEN if closed else D_UNEXPECTED_CLOSE
        return self.fault

    def state(self):
        if self.fault:
            return _FAULT
        pos = self.position_open()
        if pos is None:
            return _CLOSED if self.closed_cmd else _OPEN
        return _OPEN if pos else _CLOSED
