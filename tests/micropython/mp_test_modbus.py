# The Modbus RTU master's framing and error classification, in the MicroPython VM. The bus is a
# scripted HAL object (the real line is exercised by tests/firmware/ against pymodbus).
import time

from gasguard import modbus


class ScriptedBus:
    def __init__(self, answer):
        self.answer = bytearray(answer)
        self.sent = []

    def write(self, buf):
        self.sent.append(bytes(buf))

    def readinto(self, buf):
        n = min(len(buf), len(self.answer))
        for i in range(n):
            buf[i] = self.answer[i]
        self.answer = self.answer[n:]
        return n


def _frame(body):
    c = modbus.crc16(body, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


def _run(answer, slave=1, fc=4, count=2):
    bus = ScriptedBus(b"")
    m = modbus.Master(bus, 9600, deadline_ms=30)
    t0 = time.ticks_us()
    m.read(slave, fc, 0, count, t0)
    bus.answer = bytearray(answer)
    r = m.poll(time.ticks_us())
    while r == modbus.BUSY:
        time.sleep_ms(5)
        r = m.poll(time.ticks_us())
    return r, m, bus


def test_crc16_known_vector():
    # read input registers 0..1 of slave 1: 01 04 00 00 00 02 + CRC 71 CB
    assert _frame(b"\x01\x04\x00\x00\x00\x02")[-2:] == b"\x71\xcb"


def test_request_bytes():
    _, _, bus = _run(_frame(b"\x01\x04\x04\x00\x7d\x00\x00"))
    assert bus.sent == [b"\x01\x04\x00\x00\x00\x02\x71\xcb"]


def test_ok_response():
    r, m, _ = _run(_frame(b"\x01\x04\x04\x00\x7d\x00\x00"))
    assert r == modbus.OK
    assert m.rx[3] == 0 and m.rx[4] == 0x7D


def test_each_failure_is_distinct():
    good = _frame(b"\x01\x04\x04\x00\x7d\x00\x00")
    bad_crc = good[:-1] + bytes((good[-1] ^ 0xFF,))
    cases = [
        (bad_crc, modbus.E_CRC),
        (_frame(b"\x01\x84\x02"), modbus.E_EXCEPTION),
        (_frame(b"\x02\x04\x04\x00\x7d\x00\x00"), modbus.E_WRONG_SLAVE),
        (good[:5], modbus.E_SHORT),
        (b"", modbus.E_TIMEOUT),
        (_frame(b"\x01\x03\x04\x00\x7d\x00\x00"), modbus.E_FRAME),  # wrong function code
        (_frame(b"\x01\x04\x02\x00\x7d"), modbus.E_FRAME),  # 1 register, not the 2 asked
    ]
    for answer, want in cases:
        r, m, _ = _run(answer)
        assert r == want, (answer, modbus.RESULT_NAMES[r], modbus.RESULT_NAMES[want])
    r, m, _ = _run(_frame(b"\x01\x84\x02"))
    assert m.exc == 2  # illegal data address


def test_gap_before_next_request():
    r, m, _ = _run(_frame(b"\x01\x04\x04\x00\x7d\x00\x00"))
    now = time.ticks_us()
    assert not m.ready(time.ticks_add(m.t_last, m.gap_us - 100))
    assert m.ready(time.ticks_add(m.t_last, m.gap_us))
    assert m.gap_us == 11000000 // 9600 * 35 // 10 and now > 0
