# Round-robin polling of 1-8 detectors on one bus through their register profiles. One Modbus
# transaction at a time, advanced by step() each loop cycle; a detector that fails several polls
# in a row, with no good answer for stale_ms, is reported NOANSWER/FAULT and then polled less
# often, so it never stalls the others. The time bound keeps line noise (one garbled frame in
# five at 1 % byte errors) from tripping the valve; a dead detector is still found in ~stale_ms.
#
# Late replies. RTU replies carry no transaction number: a detector that answers after the
# deadline would have its old answer taken for the next request's (readings lagging, a stale
# high reading raising an alarm out of turn). So after a detector misses its deadline it is not
# asked again until as long as its latest reply has ever been late (a deadline at first), with
# the line watched meanwhile: a late reply then arrives on a quiet line, named by its address,
# and teaches the poller how late that detector runs. After a miss or a late reply, two answers
# in a row must come in time before the second one is believed. A detector that is always late
# never gets there, keeps failing and is a fault within about stale_ms.
from time import sleep_us, ticks_add, ticks_diff, ticks_ms

from micropython import const

from gasguard import modbus
from gasguard.protocol.profile import FAULT, NOANSWER

_TRUST = const(2)  # answers in time needed after a silence or a late reply; the last one counts


class Detector:
    # Polling state only (the rest of a detector's config stays in cfg.detectors[index]): at
    # most 12 attributes, the instance dict's size step below 17 slots.
    def __init__(self, index, address, profile):
        self.index = index
        self.address = address
        self.profile = profile
        self.state = -1  # not polled yet
        self.tenths = 0
        self.fails = 0  # consecutive failed polls
        self.errors = 0  # failed polls (late replies included) since boot
        self.polls = 0
        self.due = ticks_ms()  # not polled again before this (after a silence, or a fault)
        self.last_ok = self.due  # last answer believed (boot counts: a silent detector faults)
        self.reset_pending = False  # write the profile's latched-alarm reset before the next read
        self.trust = 0  # answers in time still needed before one is believed


class Poller:
    def __init__(self, master, detectors, sink, fail_limit=3, fault_retry_ms=1000, stale_ms=2000):
        self.m = master
        self.dets = detectors
        self.sink = sink  # safety.sample(index, state, tenths)
        self.fail_limit = fail_limit
        self.fault_retry_ms = fault_retry_ms
        self.stale_ms = stale_ms
        self.cur = -1  # index of the detector whose transaction is in flight
        self.writing = False
        n = len(detectors)
        self.sent = [0] * n  # ticks_ms of each detector's latest request
        # how late each detector's replies have come at most: the quiet wait after a miss
        self.late_ms = [master.deadline_us // 1000] * n
        self.next = 0
        self.last_done = 0  # ticks_ms of the last finished transaction (loop check)

    def request_reset(self):
        for d in self.dets:
            if d.profile.reset is not None:
                d.reset_pending = True

    def step(self, now_ms, now_us):
        m = self.m
        if self.cur >= 0:
            r = m.poll(now_us)
            if r == modbus.BUSY:
                return
            self._done(self.cur, r, now_ms)
            self.cur = -1
            # start the next request in this same cycle: wait out the 3.5-character gap here
            # (about 4 ms at 9600 baud, bounded) instead of losing a whole loop period
            wait = m.gap_us - ticks_diff(now_us, m.t_last)
            if 0 < wait <= m.gap_us:
                sleep_us(wait)
                now_us = ticks_add(now_us, wait)
        else:
            m.idle(now_us)
        if m.late:
            self._late(m.late, now_ms)
            m.late = 0
        if not m.ready(now_us):
            return
        n = len(self.dets)
        for k in range(n):
            i = (self.next + k) % n
            d = self.dets[i]
            if ticks_diff(now_ms, d.due) < 0:
                continue  # after a silence or a fault: not yet
            self.next = (i + 1) % n
            self.cur = i
            self.sent[i] = now_ms
            p = d.profile
            if d.reset_pending:
                d.reset_pending = False
                fn, addr, value = p.reset
                self.writing = True
                m.write(d.address, fn, addr, value, now_us)
            else:
                self.writing = False
                m.read(d.address, p.function, p.start, p.count, now_us)
            return

    def _late(self, address, now_ms):
        for i in range(len(self.dets)):
            d = self.dets[i]
            if d.address == address:
                d.trust = _TRUST
                late = ticks_diff(now_ms, self.sent[i])  # at least this late: learn it
                if self.late_ms[i] < late <= self.stale_ms:
                    self.late_ms[i] = late
                self._failed(d, modbus.E_FRAME, now_ms)

    def _done(self, i, r, now_ms):
        d = self.dets[i]
        self.last_done = now_ms
        d.polls += 1
        d.due = now_ms
        if r != modbus.OK:
            if r == modbus.E_TIMEOUT or r == modbus.E_SHORT:
                # its answer may still come: not asked again until it would have, so that a
                # late one arrives on a quiet line instead of passing for the next answer
                d.trust = _TRUST
                d.due = ticks_add(self.sent[i], self.late_ms[i] + self.m.deadline_us // 1000)
            self._failed(d, r, now_ms)
            return
        if self.writing:
            return
        if d.trust:
            d.trust -= 1
            if d.trust:
                return  # in time, but not yet believed: the next one will be
        d.fails = 0
        d.last_ok = now_ms
        p = d.profile
        t = p.tenths(self.m.rx, 3)
        d.tenths = t
        d.state = p.state(self.m.rx, 3, t)
        self.sink(d.index, d.state, t)

    def _failed(self, d, r, now_ms):
        d.errors += 1
        d.fails += 1
        if d.fails >= self.fail_limit and ticks_diff(now_ms, d.last_ok) >= self.stale_ms:
            d.due = ticks_add(now_ms, self.fault_retry_ms)
            # silence is "no answer"; garbled, late, wrong or exception answers are a faulty
            # detector. Which one is decided once per spell: a late detector alternates
            # timeouts and late replies, and each change of state would be a fault event
            if d.state != NOANSWER and d.state != FAULT:
                d.state = NOANSWER if r == modbus.E_TIMEOUT else FAULT
            self.sink(d.index, d.state, d.tenths)
