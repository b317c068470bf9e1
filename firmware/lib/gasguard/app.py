# Builds the device from its config and a HAL board, and runs the superloop: a fixed-period safety
# cycle (bus step, decision, valve, indicators, watchdog) first, then bounded slack work (event
# log, gateway link, backend housekeeping). The slack can never delay the next cycle's valve
# decision by more than one bounded step, and the cycle itself allocates nothing.
import gc
import sys
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms, ticks_us

from micropython import const

from gasguard import detectors, modbus
from gasguard import events as ev
from gasguard.eventlog import EventLog
from gasguard.hmi import Button, Indicators
from gasguard.persist import life, makedirs
from gasguard.protocol import VERSION
from gasguard.protocol import catalogue as cat
from gasguard.protocol.profile import OVER, STATE_NAMES
from gasguard.safety import Safety, Settings
from gasguard.valve import LATCHING, NC, Valve

_BUS_STALL_MS = const(3000)  # no finished bus transaction for this long: stop feeding the watchdog
_OVERRUN_TRIP = const(5)  # a cycle starting this many periods late is a loop overrun: no feed


class App:
    def __init__(self, board, cfg, root):
        self.board = board
        self.cfg = cfg
        self.root = root
        # Every attribute is made here first, while the heap is still in one piece: the
        # instance dict grows in steps (the last one a 464-byte block), and after the event log
        # scan and the link set-up a block that size may no longer be found.
        self.queue = self.safety = self.dets = self.master = self.poller = self.valve = None
        self.btn_ack = self.btn_reset = self.ind = self.log = self.link = None
        self.event_seq = self.boot = 0
        self.reset_cause = self.inst = None
        self.lost = 0  # events lost on this board since boot (flash log rotation, queue overflow)
        self.log_dropped = 0  # the log's own count, as far as reported
        # loop statistics (small integers only: the cycle must not allocate)
        self.period = cfg.loop_ms
        self.cycles = 0
        self.mean_us = 0
        self.max_us = 0
        self.overruns = 0
        self.up_ms = 0
        self.up_s = 0
        self.last_ms = ticks_ms()
        self.identify_until = 0
        self.selftest_until = 0
        self.slack_oom = 0  # slack steps put off for want of heap
        self.stopped = False
        # the link and its framing are loaded only on a board that has one, and early (main.py
        # loads them before this module): their bytecode needs room in one piece, which the
        # event log scan below breaks up
        transport = board.link()
        Link = None
        if transport:
            from gasguard.link import Link
        makedirs(root)
        self.inst, self.boot, trouble = life(root)
        self.reset_cause = board.reset_cause()
        self.queue = ev.EventQueue(32)
        fault_closes = [d[3] for d in cfg.detectors]
        self.safety = Safety(Settings(cfg.alarm), fault_closes, self.queue)
        self.dets = [detectors.Detector(i, d[0], d[1]) for i, d in enumerate(cfg.detectors)]
        b = cfg.bus
        self.master = modbus.Master(board.bus(), b["baud"], b["deadline_ms"])
        self.poller = detectors.Poller(
            self.master,
            self.dets,
            self.safety.sample,
            b["fail_limit"],
            b["fault_retry_ms"],
            b["stale_ms"],
        )
        v = cfg.valve
        self.valve = Valve(
            LATCHING if v["kind"] == "latching" else NC,
            board.valve,
            board.valve_pos,
            v["position_open_level"],
            v["travel_ms"],
            v["pulse_ms"],
            2,
            v["knob_timeout_s"] * 1000,
        )
        p = cfg.pins
        self.btn_ack = Button(board.ack, p["buttons_active_low"])
        self.btn_reset = Button(board.reset, p["buttons_active_low"], 30, p["reset_hold_ms"])
        self.ind = Indicators(board.red, board.yellow, board.green, board.buzzer, board.fan)
        if Link is not None:  # made before the log scan too, for the same reason
            self.link = Link(transport, cfg, None, self.boot, self)
        self.log = EventLog(root).open()
        if self.link is not None:
            self.link.log = self.log
        detail = "reset cause %s; valve closed until reset on site" % self.reset_cause
        if self.log.torn:
            detail += "; %d torn log record cut" % self.log.torn
        self._record(ev.BOOT, ev.NO_DET, 0, -1, detail)
        if trouble:
            self._record(ev.TAMPER, ev.NO_DET, 0, -1, trouble)
        if not self.log.chain_ok:
            self._record(
                ev.TAMPER,
                ev.NO_DET,
                0,
                -1,
                "event log chain broken at record %d" % self.log.chain_break,
            )

    # --- the safety cycle: no allocation from here ... -------------------------------------------

    def cycle(self, now_ms, now_us):
        d = ticks_diff(now_ms, self.last_ms)
        self.last_ms = now_ms
        self.up_ms += d
        while self.up_ms >= 1000:
            self.up_ms -= 1000
            self.up_s += 1
        self.poller.step(now_ms, now_us)
        ack = self.btn_ack.update(now_ms)
        reset = self.btn_reset.update(now_ms)
        v = self.valve
        closed = self.safety.step(now_ms, self.up_s, ack, reset, v.fault_detail if v.fault else 0)
        if reset and not closed:
            self.poller.request_reset()
        self.valve.apply(closed, now_ms)
        ident = False
        if self.identify_until:
            ident = ticks_diff(self.identify_until, now_ms) > 0
            if not ident:
                self.identify_until = 0
        test = False
        if self.selftest_until:
            test = ticks_diff(self.selftest_until, now_ms) > 0
            if not test:
                self.selftest_until = 0
        self.ind.show(now_ms, self.safety, self.valve, True, ident, test)
        # feed the watchdog only if the cycle's checks passed: the loop keeps its period, the
        # bus is moving and the valve output agrees with the decision
        ok = ticks_diff(now_ms, self.poller.last_done) < _BUS_STALL_MS or self.up_s < 3
        if d > _OVERRUN_TRIP * self.period:
            ok = False
        if self.valve.kind == NC and self.valve.out_level != (0 if closed else 1):
            ok = False
        if ok:
            self.board.wdt.feed()

    # --- ... to here -----------------------------------------------------------------------------

    def _record(self, kind, det, tenths, detail_code, detail=None, up=None):
        # Nothing changes until the log has the record: a MemoryError while the body is built
        # leaves the event queued with its number unused, so the retry neither skips nor repeats.
        seq = self.event_seq + 1
        if up is None:
            up = self.up_s
        if detail is None and detail_code >= 0:
            detail = ev.detail_text(detail_code, STATE_NAMES)
        t = self.link.unix_time(self.up_s * 1000 + self.up_ms) if self.link else None
        lel = None
        if det != ev.NO_DET and kind in (
            ev.ALARM_LOW,
            ev.ALARM_HIGH,
            ev.ALARM_CLEAR,
            ev.RESET_REFUSED,
            ev.DET_RESTORED,
        ):
            lel = tenths / 10
        n = tenths if kind == ev.EVENTS_LOST else None
        valve = None
        if kind in (ev.VALVE_CLOSED, ev.VALVE_FAULT, ev.RESET, ev.BOOT):
            valve = cat.VALVE_STATES[self.valve.state()]
        body = {"id": [self.boot, seq], "kind": cat.EVENT_KINDS[kind], "up": up}
        for k, v in (
            ("time", t),
            ("det", None if det == ev.NO_DET else det),
            ("lel", lel),
            ("over", True if detail_code == ev.D_OVER else None),
            ("n", n),
            ("valve", valve),
            ("detail", detail[:96] if detail else None),
        ):
            if v is not None:
                body[k] = v
        try:
            self.log.append(body)
        except OSError as e:
            self.lost += 1  # the flash is full or failing: the heartbeat's count says so
            print("event log write failed:", e)
        self.event_seq = seq
        dropped = self.log.dropped_unacked - self.log_dropped
        if dropped:  # the append rotated out events the gateway never had: say so
            self.log_dropped += dropped
            self.lost += dropped
            self.queue.push(ev.EVENTS_LOST, ev.NO_DET, dropped, ev.D_LOG_FULL, self.up_s)
        try:
            print(
                "EVENT %d %d %s det=%s lel=%s %s"
                % (self.boot, seq, body["kind"], body.get("det"), body.get("lel"), detail or "")
            )
        except MemoryError:
            pass  # the console line only: the event is in the log

    def slack(self, now_ms):
        # Work that may allocate. Running short of heap here must not stop the safety loop: the
        # step is retried on a later cycle (an event stays queued until it is in flash).
        try:
            self._slack(now_ms)
        except MemoryError as e:
            self.slack_oom += 1
            gc.collect()
            try:
                print("slack: out of heap, retrying", self.slack_oom, e)
            except MemoryError:
                pass

    def _slack(self, now_ms):
        self.board.service(now_ms)  # first: served even when the log or link work below fails
        q = self.queue
        i = q.pop()
        if i >= 0:  # one event per cycle: a flash write is the longest slack step
            self._record(q.kind[i], q.det[i], q.tenths[i], q.detail[i], None, q.up_s[i])
            q.done()
        elif q.lost:
            n = q.lost
            self._record(ev.EVENTS_LOST, ev.NO_DET, n, ev.D_QUEUE_FULL)
            q.lost -= n  # (more may have been lost meanwhile: they are reported next)
            self.lost += n
        elif self.valve.knob_timed_out:
            self._record(ev.RESET_REFUSED, ev.NO_DET, 0, ev.D_KNOB_TIMEOUT)
            self.valve.knob_timed_out = False
        if self.link is not None:
            self.link.service(now_ms, self.up_s * 1000 + self.up_ms)

    # --- link callbacks --------------------------------------------------------------------------

    def birth_body(self):
        dets = [{"addr": d[0], "gas": d[2], "profile": d[4]} for d in self.cfg.detectors]
        return {
            "dev": self.cfg.device_id,
            "inst": self.inst,
            "fw": VERSION,
            "cfg": self.cfg.digest_hex(),
            "cause": self.reset_cause,
            "valve": self.cfg.valve["kind"],
            "dets": dets,
        }

    def health(self):
        dets = []
        for d in self.dets:
            h = {"state": STATE_NAMES[d.state] if d.state >= 0 else "noanswer", "errors": d.errors}
            if d.state == 0 or d.state == OVER:
                h["lel"] = d.tenths / 10
            dets.append(h)
        s = self.safety
        loop = {
            "period_ms": self.period,
            "mean_us": self.mean_us,
            "max_us": self.max_us,
            "overruns": self.overruns,
        }
        t = self.link.unix_time(self.up_s * 1000 + self.up_ms) if self.link else None
        hb = {
            "up": self.up_s,
            "valve": cat.VALVE_STATES[self.valve.state()],
            "alarm": cat.ALARM_LEVELS[s.site_level],
            "loop": loop,
            "heap": self.board.heap_free(),
            "pending": self.log.pending(),
            "lost": self.lost,
            "dets": dets,
        }
        if t is not None:
            hb["time"] = t
        return hb

    def on_command(self, cmd):
        if cmd == "identify":
            self.identify_until = ticks_add(ticks_ms(), 10000)
            return True, {"dev": self.cfg.device_id, "fw": VERSION, "boot": self.boot}
        if cmd == "config_digest":
            return True, {"cfg": self.cfg.digest_hex()}
        if cmd == "selftest":
            # remote self-test: lamps and sounder for 2 s, never the valve, and never while an
            # alarm or fault is being shown (it would hide it)
            s = self.safety
            if s.site_level or s.any_alarm or s.fault or s.valve_fault:
                return False, {"why": "alarm or fault active"}
            self.selftest_until = ticks_add(ticks_ms(), 2000)
            self.queue.push(ev.SELFTEST, ev.NO_DET, 0, ev.D_NONE, self.up_s)
            return True, {"valve": "not exercised remotely"}
        return False, None

    # --- the superloop ---------------------------------------------------------------------------

    def run(self, max_cycles=-1):
        period = self.period
        next_t = ticks_ms()
        gc.collect()
        while max_cycles != 0 and not self.stopped:
            max_cycles -= 1
            now_ms = ticks_ms()
            t0 = ticks_us()
            self.cycle(now_ms, t0)
            took = ticks_diff(ticks_us(), t0)
            self.cycles += 1
            self.mean_us += (took - self.mean_us) // 16
            if took > self.max_us:
                self.max_us = took
            next_t = ticks_add(next_t, period)
            self.slack(now_ms)
            wait = ticks_diff(next_t, ticks_ms())
            if wait > 0:
                sleep_ms(wait)
            elif wait < -period:
                self.overruns += 1
                next_t = ticks_ms()


def _safe_outputs(board, cfg):
    """Valve to its safe state and the fault light on, whatever state the code was in."""
    board.valve.value(0)  # NC: de-energised = closed
    if cfg is not None and cfg.valve["kind"] == "latching":
        board.valve.value(1)  # latching: pulse the close coil
        sleep_ms(cfg.valve["pulse_ms"])
        board.valve.value(0)
    for pin in (board.red, board.yellow):
        pin.value(1)
    board.green.value(0)


def run(board, cfg, root):
    """Build the device and run it until a fault; every fault ends in the safe state."""
    try:
        app = App(board, cfg, root)
        gc.collect()
        free = gc.mem_free()
        print(
            "GASGUARD RUNNING %s boot %d cause %s heap free %d of %d"
            % (cfg.device_id, app.boot, app.reset_cause, free, free + gc.mem_alloc())
        )
        app.run()
    except KeyboardInterrupt:
        # Ctrl-C on the console (an installer's mpremote or `gasguard flash`): stop in the safe
        # state and leave the REPL usable; a reset returns to normal operation
        _safe_outputs(board, cfg)
        board.buzzer.value(0)
        print("STOPPED from the console: valve closed; reset the board to resume")
        # the self-test (gasguard commission) runs on these; set only now, so a running board
        # pays no heap for it (the 110k heap has little to spare)
        import gasguard

        gasguard.stopped = (board, cfg)
        board.maintenance()
        from gasguard.release import release

        release(gasguard)
    except Exception as e:  # noqa: BLE001 - any failure ends in the safe state
        _safe_outputs(board, cfg)
        print("FATAL: firmware exception; valve closed, waiting for the watchdog")
        sys.print_exception(e)
        board.watchdog_starve()
