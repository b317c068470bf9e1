# The Modbus RTU master's framing and error classification, in the MicroPython VM. The bus is a
# scripted HAL object (the real line is exercised by tests/firmware/ against pymodbus): bytes
# become readable at the times the script says, so silences are real silences.
import time

from gasguard import detectors, modbus
from gasguard.protocol import profile, profile_parse

# the master's results by number: only those the poller needs have names on the device
RESULT_NAMES = (
    "idle", "busy", "ok", "timeout", "short", "crc", "exception", "wrong-slave", "frame",
    "trailing",
)  # fmt: skip
E_CRC, E_EXCEPTION, E_WRONG_SLAVE, E_TRAILING = 5, 6, 7, 9


class ScriptedBus:
    """Bytes the slave 'sends': (delay in ms after the request, data) chunks, readable once
    their time has come."""

    def __init__(self):
        self.sent = []
        self.chunks = []  # (ticks_ms when readable, bytes)
        self.t_req = time.ticks_ms()

    def answer(self, *chunks):
        for delay, data in chunks:
            self.chunks.append((time.ticks_add(self.t_req, delay), bytearray(data)))

    def write(self, buf):
        self.sent.append(bytes(buf))
        self.t_req = time.ticks_ms()

    def readinto(self, buf):
        now = time.ticks_ms()
        n = 0
        while self.chunks and time.ticks_diff(now, self.chunks[0][0]) >= 0 and n < len(buf):
            at, data = self.chunks[0]
            while data and n < len(buf):
                buf[n] = data[0]
                data = data[1:]
                n += 1
            if data:
                self.chunks[0] = (at, data)
            else:
                self.chunks.pop(0)
        return n


def _frame(body):
    c = modbus.crc16(body, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


GOOD = _frame(b"\x01\x04\x04\x00\x7d\x00\x00")


def _poll(m, ms=400):
    t0 = time.ticks_ms()
    r = m.poll(time.ticks_us())
    while r == modbus.BUSY and time.ticks_diff(time.ticks_ms(), t0) < ms:
        time.sleep_ms(5)
        r = m.poll(time.ticks_us())
    return r


def _run(*chunks, deadline_ms=30):
    bus = ScriptedBus()
    m = modbus.Master(bus, 9600, deadline_ms=deadline_ms)
    m.read(1, 4, 0, 2, time.ticks_us())
    bus.answer(*chunks)
    return _poll(m), m, bus


def test_crc16_known_vector():
    # read input registers 0..1 of slave 1: 01 04 00 00 00 02 + CRC 71 CB
    assert _frame(b"\x01\x04\x00\x00\x00\x02")[-2:] == b"\x71\xcb"


def test_request_bytes():
    _, _, bus = _run((5, GOOD))
    assert bus.sent == [b"\x01\x04\x00\x00\x00\x02\x71\xcb"]


def test_ok_response():
    r, m, _ = _run((5, GOOD))
    assert r == modbus.OK
    assert m.rx[3] == 0 and m.rx[4] == 0x7D


def test_a_reply_in_pieces_is_one_frame():
    r, _, _ = _run((5, GOOD[:3]), (6, GOOD[3:6]), (7, GOOD[6:]))
    assert r == modbus.OK


def test_each_failure_is_distinct():
    bad_crc = GOOD[:-1] + bytes((GOOD[-1] ^ 0xFF,))
    cases = [
        (bad_crc, E_CRC),
        (_frame(b"\x01\x84\x02"), E_EXCEPTION),
        (_frame(b"\x02\x04\x04\x00\x7d\x00\x00"), E_WRONG_SLAVE),
        (GOOD[:5], modbus.E_SHORT),
        (b"", modbus.E_TIMEOUT),
        (_frame(b"\x01\x03\x04\x00\x7d\x00\x00"), modbus.E_FRAME),  # wrong function code
        (_frame(b"\x01\x04\x02\x00\x7d"), modbus.E_FRAME),  # 1 register, not the 2 asked
        (GOOD + b"\x00", E_TRAILING),  # a valid reply with a byte after it
        (GOOD + GOOD, E_TRAILING),
    ]
    for answer, want in cases:
        r, m, _ = _run((5, answer))
        assert r == want, (answer, RESULT_NAMES[r], RESULT_NAMES[want])
    r, m, _ = _run((5, _frame(b"\x01\x84\x02")))
    assert m.exc == 2  # illegal data address


def test_trailing_bytes_after_the_answer_within_the_silence_reject_it():
    # the extra byte comes 2 ms after the last one: less than 3.5 characters (4 ms) of silence
    r, _, _ = _run((5, GOOD), (7, b"\x55"))
    assert r == E_TRAILING


def test_silence_mid_frame_ends_it_short_before_the_deadline():
    r, m, _ = _run((5, GOOD[:4]), (200, GOOD[4:]), deadline_ms=500)
    assert r == modbus.E_SHORT
    assert time.ticks_diff(time.ticks_us(), m.t_sent) < 150000  # not the 500 ms deadline


def test_a_late_reply_on_the_idle_line_names_its_sender_and_blocks_the_next_request():
    r, m, bus = _run((60, GOOD), deadline_ms=30)  # the answer comes 30 ms after the deadline
    assert r == modbus.E_TIMEOUT
    t0 = time.ticks_ms()
    saw_busy_line = False
    while time.ticks_diff(time.ticks_ms(), t0) < 150 and not m.late:
        m.idle(time.ticks_us())
        if m.got:
            saw_busy_line = True
            assert not m.ready(time.ticks_us())  # never talk over bytes on the line
        time.sleep_ms(2)
    assert m.late == 1 and saw_busy_line
    assert m.ready(time.ticks_us())


def test_a_late_reply_in_another_slaves_turn_names_its_sender():
    r, m, _ = _run((5, _frame(b"\x03\x04\x04\x00\x10\x00\x00")))
    assert r == E_WRONG_SLAVE and m.late == 3


def test_gap_before_next_request():
    r, m, _ = _run((5, GOOD))
    now = time.ticks_us()
    assert not m.ready(time.ticks_add(m.t_last, m.gap_us - 100))
    assert m.ready(time.ticks_add(m.t_last, m.gap_us))
    assert m.gap_us == 11000000 // 9600 * 35 // 10 and now > 0


class _QueueingSlave(ScriptedBus):
    """Answers every request `late_ms` after it, in order, with the reading of the moment it was
    asked: a stale answer for whatever request is in flight when it lands."""

    def __init__(self, late_ms):
        super().__init__()
        self.late_ms = late_ms
        self.reading = 0

    def write(self, buf):
        super().write(buf)
        body = b"\x01\x04\x04" + bytes((self.reading >> 8, self.reading & 0xFF, 0, 0))
        self.answer((self.late_ms, _frame(body)))


def _recorder(got):
    def sink(i, state, tenths):
        got.append((state, tenths))

    return sink


def test_a_detector_that_always_answers_late_is_never_believed_and_faults_within_stale_ms():
    for late_ms in (300, 1000):
        bus = _QueueingSlave(late_ms)
        p = profile_parse.load("generic-x10")
        d = detectors.Detector(0, 1, p)
        got = []
        poller = detectors.Poller(
            modbus.Master(bus, 9600, 100), [d], _recorder(got), 3, 1000, 2000
        )
        t0 = time.ticks_ms()
        bus.reading = 550  # 55 %LEL in the first answers ...
        fault_at = None
        while time.ticks_diff(time.ticks_ms(), t0) < 2600:
            if time.ticks_diff(time.ticks_ms(), t0) > 50:
                bus.reading = 0  # ... then clean air: the late 55 must never be believed
            poller.step(time.ticks_ms(), time.ticks_us())
            # a fault either way: which of the two a spell is named by depends on whether its
            # first failure past stale_ms was a timeout or a late reply (timing, on a loaded host)
            if fault_at is None and d.state in (profile.FAULT, profile.NOANSWER):
                fault_at = time.ticks_diff(time.ticks_ms(), t0)
            time.sleep_ms(5)
        assert [x for x in got if x[0] == profile.OK] == [], (late_ms, got)
        assert fault_at is not None and fault_at <= 2300, (late_ms, fault_at)


def test_a_detector_that_missed_once_is_believed_again_on_its_second_answer_in_time():
    bus = ScriptedBus()
    p = profile_parse.load("generic-x10")
    d = detectors.Detector(0, 1, p)
    got = []
    poller = detectors.Poller(modbus.Master(bus, 9600, 50), [d], lambda i, s, t: got.append(t))
    answers = [None, 100, 200, 300]  # no answer, then three in time

    def write(buf, _w=bus.write):
        _w(buf)
        a = answers.pop(0) if answers else 300
        if a is not None:
            bus.answer((5, _frame(b"\x01\x04\x04" + bytes((a >> 8, a & 0xFF, 0, 0)))))

    bus.write = write
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 600 and len(got) < 2:
        poller.step(time.ticks_ms(), time.ticks_us())
        time.sleep_ms(5)
    assert got[:2] == [200, 300], got  # 100 (the first after the silence) was not believed
