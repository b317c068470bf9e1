# Modbus RTU master for the detector bus: one transaction at a time, driven by poll() from the
# safety loop so it never blocks it. Buffers are allocated once; a transaction allocates nothing.
from time import ticks_diff

from micropython import const

IDLE = const(0)
BUSY = const(1)
OK = const(2)
E_TIMEOUT = const(3)  # no byte before the deadline
E_SHORT = const(4)  # some bytes, then silence: a short frame
E_CRC = const(5)
E_EXCEPTION = const(6)  # the slave answered with an exception code (self.exc)
E_WRONG_SLAVE = const(7)
E_FRAME = const(8)  # wrong function code or byte count
RESULT_NAMES = (
    "idle",
    "busy",
    "ok",
    "timeout",
    "short",
    "crc",
    "exception",
    "wrong-slave",
    "frame",
)

_MAX_REGS = const(32)


# CRC-16/MODBUS four bits at a time: 16 entries (a 512-byte table cost heap for no gain
# that matters on a 9600-baud bus). Entry n is n shifted out through the reflected polynomial
# 0xA001 four times.
_CRC_NIBBLE = (
    0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
    0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400,
)  # fmt: skip


def crc16(buf, n):
    t = _CRC_NIBBLE
    c = 0xFFFF
    for i in range(n):
        c ^= buf[i]
        c = (c >> 4) ^ t[c & 15]
        c = (c >> 4) ^ t[c & 15]
    return c


class Master:
    """bus: write(buf) sends the whole buffer (driving DE/RE itself); readinto(buf) returns the
    number of bytes read without waiting (0 or None when there are none)."""

    def __init__(self, bus, baud, deadline_ms=100):
        self.bus = bus
        self.char_us = 11000000 // baud  # 1 start, 8 data, parity or 2nd stop, 1 stop
        # 3.5 character times of silence between frames; 1750 us fixed above 19200 baud
        self.gap_us = self.char_us * 35 // 10 if baud <= 19200 else 1750
        self.deadline_us = deadline_ms * 1000
        self.tx = bytearray(8)
        self.rx = bytearray(5 + 2 * _MAX_REGS)
        self._scratch = bytearray(16)
        self.state = IDLE
        self.result = IDLE
        self.exc = 0
        self.slave = 0
        self.fc = 0
        self.count = 0
        self.expect = 0
        self.got = 0
        self.t_sent = 0
        self.t_last = 0  # ticks_us of the last byte seen on the line, for the 3.5-char gap
        self.line_busy = False

    def ready(self, now_us):
        return self.state != BUSY and ticks_diff(now_us, self.t_last) >= self.gap_us

    def _send(self, slave, fc, addr, value, expect, now_us):
        tx = self.tx
        tx[0] = slave
        tx[1] = fc
        tx[2] = addr >> 8
        tx[3] = addr & 0xFF
        tx[4] = value >> 8
        tx[5] = value & 0xFF
        c = crc16(tx, 6)
        tx[6] = c & 0xFF
        tx[7] = c >> 8
        while self.bus.readinto(self._scratch):  # drop stale bytes from an earlier answer
            pass
        self.slave = slave
        self.fc = fc
        self.expect = expect
        self.got = 0
        self.exc = 0
        self.state = BUSY
        self.result = BUSY
        self.bus.write(tx)
        self.t_sent = now_us
        self.t_last = now_us

    def read(self, slave, fc, addr, count, now_us):
        """Start an FC03/FC04 read of count registers; poll() until it is no longer BUSY."""
        self.count = count
        self._send(slave, fc, addr, count, 5 + 2 * count, now_us)

    def write(self, slave, fc, addr, value, now_us):
        """Start an FC05 (coil: value 0xFF00 or 0) or FC06 (register) write."""
        self.count = 0
        self._send(slave, fc, addr, value, 8, now_us)

    def _finish(self, result, now_us):
        self.state = IDLE
        self.result = result
        self.t_last = now_us
        return result

    def poll(self, now_us):
        if self.state != BUSY:
            return self.result
        rx = self.rx
        sc = self._scratch
        top = len(rx)
        while self.got < self.expect:
            n = self.bus.readinto(sc)  # into scratch, then copy: no memoryview per offset
            if not n:
                break
            g = self.got
            for i in range(n):
                if g < top:
                    rx[g] = sc[i]
                    g += 1
            self.got = g
            self.t_last = now_us
            if g >= 2 and rx[1] & 0x80:
                self.expect = 5  # exception response
            elif g >= 3 and self.count and 5 + rx[2] <= top:
                self.expect = 5 + rx[2]  # frame by the declared byte count; checked below
        got = self.got
        n = self.expect
        if got >= n:
            if crc16(rx, n - 2) != rx[n - 2] | (rx[n - 1] << 8):
                return self._finish(E_CRC, now_us)
            if rx[0] != self.slave:
                return self._finish(E_WRONG_SLAVE, now_us)
            if rx[1] & 0x80:
                self.exc = rx[2]
                return self._finish(E_EXCEPTION, now_us)
            if rx[1] != self.fc or (self.count and rx[2] != 2 * self.count):
                return self._finish(E_FRAME, now_us)
            return self._finish(OK, now_us)
        if ticks_diff(now_us, self.t_sent) >= self.deadline_us:
            return self._finish(E_SHORT if got else E_TIMEOUT, now_us)
        return BUSY
