# Round-robin polling of 1-8 detectors on one bus through their register profiles. One Modbus
# transaction at a time, advanced by step() each loop cycle; a detector that fails several polls
# in a row, with no good answer for stale_ms, is reported NOANSWER/FAULT and then polled less
# often, so it never stalls the others. The time bound keeps line noise (one garbled frame in
# five at 1 % byte errors) from tripping the valve; a dead detector is still found in ~stale_ms.
from time import sleep_us, ticks_add, ticks_diff, ticks_ms

from gasguard import modbus
from gasguard.protocol.profile import FAULT, NOANSWER


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
        self.errors = 0  # failed polls since boot
        self.polls = 0
        self.due = 0  # ticks_ms before which a faulted detector is not polled again
        self.last_ok = ticks_ms()  # last good answer (boot counts: a silent detector faults)
        self.reset_pending = False  # write the profile's latched-alarm reset before the next read


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
            self._done(self.dets[self.cur], r, now_ms)
            self.cur = -1
            # start the next request in this same cycle: wait out the 3.5-character gap here
            # (about 4 ms at 9600 baud, bounded) instead of losing a whole loop period
            wait = m.gap_us - ticks_diff(now_us, m.t_last)
            if 0 < wait <= m.gap_us:
                sleep_us(wait)
                now_us = ticks_add(now_us, wait)
        if not m.ready(now_us):
            return
        n = len(self.dets)
        for k in range(n):
            i = (self.next + k) % n
            d = self.dets[i]
            if d.fails >= self.fail_limit and ticks_diff(now_ms, d.due) < 0:
                continue  # faulted: wait for its slower retry
            self.next = (i + 1) % n
            self.cur = i
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

    def _done(self, d, r, now_ms):
        self.last_done = now_ms
        d.polls += 1
        if r == modbus.OK:
            d.fails = 0
            d.last_ok = now_ms
            if self.writing:
                return
            p = d.profile
            t = p.tenths(self.m.rx, 3)
            d.tenths = t
            d.state = p.state(self.m.rx, 3, t)
            self.sink(d.index, d.state, t)
            return
        d.errors += 1
        d.fails += 1
        d.due = now_ms
        if d.fails >= self.fail_limit and ticks_diff(now_ms, d.last_ok) >= self.stale_ms:
            d.due = ticks_add(now_ms, self.fault_retry_ms)
            # silence is "no answer"; garbled, wrong or exception answers are a faulty detector
            d.state = NOANSWER if r == modbus.E_TIMEOUT else FAULT
            self.sink(d.index, d.state, d.tenths)
