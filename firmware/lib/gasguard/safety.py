# The safety logic: alarm state per detector, the valve interlock, acknowledge and reset.
# Pure and hardware-free: the loop feeds it samples, button edges and the valve's supervision
# result, and reads back what the outputs should be. It allocates nothing after construction.
from time import ticks_add, ticks_diff

from micropython import const

from gasguard import events as ev
from gasguard.protocol.profile import OK, OVER

NONE = const(0)
LOW = const(1)
HIGH = const(2)  # the levels index protocol catalogue.ALARM_LEVELS


class Settings:
    """Thresholds and policy, from the validated config (tenths of %LEL, milliseconds)."""

    def __init__(self, c):
        self.low = c.get("low_alarm_tenths", 200)
        self.high = c.get("high_alarm_tenths", 500)
        self.hyst = c.get("hysteresis_tenths", 20)
        self.deb_low = c.get("debounce_low", 2)
        self.deb_high = c.get("debounce_high", 1)
        self.deb_clear = c.get("debounce_clear", 3)
        self.confirm_low = c.get("confirm_low", 1)
        self.close_on_low = c.get("close_on_low", False)
        self.silence_ms = c.get("silence_s", 300) * 1000


class Safety:
    def __init__(self, settings, fault_closes, queue):
        n = len(fault_closes)
        self.s = settings
        self.n = n
        self.q = queue
        self.fault_closes = fault_closes  # per detector: does losing it close the valve?
        self.level = [NONE] * n
        self.healthy = [False] * n  # unknown until the first good sample
        self.state = [-1] * n  # last detector state code (-1: not polled yet)
        self.tenths = [0] * n
        self.up_cnt = [0] * n
        self.down_cnt = [0] * n
        self.faulted = [False] * n  # a fault event was raised and not yet restored
        self.over = [False] * n  # reading above the detector's range: reported once per spell
        # The valve boots closed and latched: after power-up or any fault only a person on site
        # reopens it (GB 50028 §10.8.4).
        self.latched = True
        self.site_level = NONE
        self.any_alarm = False  # some detector at or above low, confirmed or not
        self.fault = False  # some detector not healthy
        self.valve_fault = False
        self.silenced = False
        self.silenced_level = NONE
        self.silence_until = 0
        self.up_s = 0

    def _event(self, kind, det, tenths, detail):
        self.q.push(kind, det, tenths, detail, self.up_s)

    # --- per-detector samples -------------------------------------------------------------------

    def sample(self, i, state, tenths):
        """A completed poll of detector i: profile state code and reading (tenths of %LEL).
        Over range (OVER) is gas beyond what the detector measures: a high alarm at once, with
        no debounce and whatever fault_closes_valve says; it is not a fault."""
        prev = self.state[i]
        self.state[i] = state
        over = state == OVER
        if state != OK and not over:
            self.up_cnt[i] = 0
            self.down_cnt[i] = 0
            self.healthy[i] = False
            self.over[i] = False
            if not self.faulted[i] or prev != state:  # once per change of fault state
                self.faulted[i] = True
                self._event(ev.DET_FAULT, i, self.tenths[i], ev.D_STATE_BASE + state)
            return
        self.tenths[i] = tenths
        self.healthy[i] = True
        if self.faulted[i]:
            self.faulted[i] = False
            self._event(ev.DET_RESTORED, i, tenths, ev.D_NONE)
        s = self.s
        lvl = self.level[i]
        if over:
            if tenths < s.high:  # (a profile whose range ends below the set point)
                self.tenths[i] = tenths = s.high
            if not self.over[i]:
                self.over[i] = True
                self.down_cnt[i] = 0
                self.up_cnt[i] = 0
                self.level[i] = HIGH
                self._event(ev.ALARM_HIGH, i, tenths, ev.D_OVER)
            return
        self.over[i] = False
        target = HIGH if tenths >= s.high else (LOW if tenths >= s.low else NONE)
        if target > lvl:
            self.down_cnt[i] = 0
            self.up_cnt[i] += 1
            if self.up_cnt[i] >= (s.deb_high if target == HIGH else s.deb_low):
                self.up_cnt[i] = 0
                self.level[i] = target
                self._event(
                    ev.ALARM_HIGH if target == HIGH else ev.ALARM_LOW,
                    i,
                    tenths,
                    ev.D_HIGH if target == HIGH else ev.D_LOW,
                )
            return
        self.up_cnt[i] = 0
        lower = lvl
        if lvl == HIGH and tenths < s.high - s.hyst:
            lower = LOW if tenths >= s.low - s.hyst else NONE
        elif lvl == LOW and tenths < s.low - s.hyst:
            lower = NONE
        if lower == lvl:
            self.down_cnt[i] = 0
            return
        self.down_cnt[i] += 1
        if self.down_cnt[i] >= s.deb_clear:
            self.down_cnt[i] = 0
            self.level[i] = lower
            if lower == NONE:
                self._event(ev.ALARM_CLEAR, i, tenths, ev.D_NONE)
            else:
                self._event(ev.ALARM_LOW, i, tenths, ev.D_DECREASING)

    # --- once per loop cycle --------------------------------------------------------------------

    def step(self, now_ms, up_s, ack, reset, valve_fault):
        """ack/reset: True on the cycle the (debounced) button was pressed or held long enough.
        valve_fault: the valve driver's supervision verdict (0/False, or its detail code).
        Returns True if the valve must be closed."""
        self.up_s = up_s
        s = self.s
        high = False
        lows = 0
        fault = False
        fault_close = False
        for i in range(self.n):
            lvl = self.level[i]
            if lvl == HIGH:
                high = True
            if lvl >= LOW:
                lows += 1
            if not self.healthy[i]:
                fault = True
                if self.fault_closes[i]:
                    fault_close = True
        confirm = s.confirm_low if s.confirm_low <= self.n else self.n
        level = HIGH if high else (LOW if lows >= confirm else NONE)
        if level == LOW and self.site_level == NONE and confirm > 1:
            self._event(ev.ALARM_LOW, ev.NO_DET, 0, ev.D_CONFIRMED)
        self.site_level = level
        self.any_alarm = lows > 0
        self.fault = fault
        if valve_fault and not self.valve_fault:
            # valve_fault is the driver's detail code (stuck open, closed unexpectedly)
            self._event(
                ev.VALVE_FAULT,
                ev.NO_DET,
                0,
                valve_fault if valve_fault is not True else ev.D_VALVE_FAULT,
            )
        self.valve_fault = bool(valve_fault)

        reason = ev.D_NONE
        if level == HIGH:
            reason = ev.D_HIGH
        elif level == LOW and s.close_on_low:
            reason = ev.D_LOW
        elif fault_close:
            reason = ev.D_FAULT
        elif valve_fault:
            reason = ev.D_VALVE_FAULT
        if reason != ev.D_NONE and not self.latched:
            self.latched = True
            self._event(ev.VALVE_CLOSED, ev.NO_DET, 0, reason)

        # acknowledge: silences the buzzer for a while; never opens anything
        if ack and (level != NONE or fault or valve_fault) and not self.silenced:
            self.silenced = True
            self.silenced_level = level
            self.silence_until = ticks_add(now_ms, s.silence_ms)
            self._event(ev.ACK, ev.NO_DET, 0, ev.D_NONE)
        if self.silenced and (
            level > self.silenced_level
            or ticks_diff(now_ms, self.silence_until) >= 0
            or (level == NONE and not fault and not valve_fault)
        ):
            self.silenced = False

        if reset:
            self._reset()
        return self.latched

    def _reset(self):
        # Reopen only when every detector is healthy and below the low set point right now.
        for i in range(self.n):
            if not self.healthy[i]:
                self._event(ev.RESET_REFUSED, i, self.tenths[i], ev.D_UNHEALTHY)
                return
            if self.tenths[i] >= self.s.low or self.level[i] != NONE:
                self._event(ev.RESET_REFUSED, i, self.tenths[i], ev.D_GAS)
                return
        if self.valve_fault:
            self._event(ev.RESET_REFUSED, ev.NO_DET, 0, ev.D_VALVE_FAULT)
            return
        if self.latched:
            self.latched = False
            self._event(ev.RESET, ev.NO_DET, 0, ev.D_NONE)

    def buzzer(self):
        """0 off, 1 alarm (continuous), 2 fault (chirp)."""
        if self.silenced:
            return 0
        if self.site_level != NONE or self.valve_fault:
            return 1
        return 2 if self.fault else 0
