# Modbus RTU master for the detector bus: one transaction at a time, driven by poll() from the
# safety loop so it never blocks it. Buffers are allocated once; a transaction allocates nothing.
#
# Framing is the RTU spec's: a reply must begin within the response deadline and ends at 3.5
# characters of silence; one byte more than the request's answer is a rejected frame, not a
# reply with something after it. Between transactions the master keeps reading: a request goes
# out only after the line has been silent for 3.5 characters, and an intact frame that arrives
# when nobody asked (or in another slave's turn) is a late reply, reported by its sender's address
# (`late`) so that it can never pass for the answer to a later request.
from time import sleep_us, ticks_add, ticks_diff

from micropython import const

# Transaction results. Only those the poller tells apart have public names: a private const()
# keeps no name (qstr) on the device, where every interned name stays for good.
_IDLE = const(0)
BUSY = const(1)
OK = const(2)
E_TIMEOUT = const(3)  # no byte before the deadline
E_SHORT = const(4)  # some bytes, then silence: a short frame
_E_CRC = const(5)
_E_EXCEPTION = const(6)  # the slave answered with an exception code (self.exc)
_E_WRONG_SLAVE = const(7)
E_FRAME = const(8)  # wrong function code or byte count
_E_TRAILING = const(9)  # more bytes than the answer before the 3.5-character silence

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


def _intact(buf, n):
    return n >= 4 and crc16(buf, n - 2) == buf[n - 2] | (buf[n - 1] << 8)


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
        self.state = _IDLE
        self.result = _IDLE
        self.exc = 0
        self.slave = 0
        self.fc = 0
        self.count = 0
        self.expect = 0
        self.got = 0  # bytes of the frame on the line (the reply, or stray bytes when idle)
        self.t_sent = 0
        self.t_last = 0  # ticks_us when a byte was last seen on the line, for the silence
        self.late = 0  # address of a slave whose late reply was just seen (0: none)

    def ready(self, now_us):
        quiet = ticks_diff(now_us, self.t_last) >= self.gap_us
        return self.state != BUSY and not self.got and quiet

    def _read(self, now_us):
        # whatever the line holds, into rx after the bytes already there (copied from scratch:
        # no memoryview per offset); bytes past the buffer are counted, not kept
        rx = self.rx
        sc = self._scratch
        top = len(rx)
        total = 0
        while True:
            n = self.bus.readinto(sc)
            if not n:
                break
            g = self.got
            for i in range(n):
                if g < top:
                    rx[g] = sc[i]
                g += 1
            self.got = g
            total += n
        if total:
            self.t_last = now_us
        return total

    def _stray(self):
        # a frame that was not (or no longer) the answer: an intact one names a late sender
        g = self.got
        if g <= len(self.rx) and _intact(self.rx, g) and self.rx[0] != self.slave:
            self.late = self.rx[0]

    def idle(self, now_us):
        """Between transactions: read what arrives, up to 3.5 characters of silence; an intact
        frame there is a late reply (self.late = its sender)."""
        if self.state == BUSY:
            return
        if self._read(now_us) or not self.got:
            return
        if ticks_diff(now_us, self.t_last) >= self.gap_us:
            g = self.got
            if g <= len(self.rx) and _intact(self.rx, g):
                self.late = self.rx[0]
            self.got = 0

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
        self.slave = slave
        self.fc = fc
        self.expect = expect
        self.got = 0
        self.exc = 0
        self.state = BUSY
        self.result = BUSY
        self.bus.write(tx)
        self.t_sent = now_us

    def read(self, slave, fc, addr, count, now_us):
        """Start an FC03/FC04 read of count registers; poll() until it is no longer BUSY.
        Call only when ready(): the line has been silent for 3.5 characters."""
        self.count = count
        self._send(slave, fc, addr, count, 5 + 2 * count, now_us)

    def write(self, slave, fc, addr, value, now_us):
        """Start an FC05 (coil: value 0xFF00 or 0) or FC06 (register) write."""
        self.count = 0
        self._send(slave, fc, addr, value, 8, now_us)

    def _finish(self, result):
        self.state = _IDLE
        self.result = result
        if result != OK:
            self._stray()
        self.got = 0
        return result

    def poll(self, now_us):
        if self.state != BUSY:
            return self.result
        got_now = self._read(now_us)
        g = self.got
        if not g:
            if ticks_diff(now_us, self.t_sent) >= self.deadline_us:
                return self._finish(E_TIMEOUT)
            return BUSY
        rx = self.rx
        n = 5 if g >= 2 and rx[1] & 0x80 else self.expect  # an exception answer is 5 bytes
        if g < n:
            if got_now or ticks_diff(now_us, self.t_last) < self.gap_us:
                return BUSY
            # silence before the answer's length: a whole frame of the wrong size, or a torn one
            if g <= len(rx) and _intact(rx, g):
                return self._finish(_E_WRONG_SLAVE if rx[0] != self.slave else E_FRAME)
            return self._finish(E_SHORT)
        if g == n:
            # the answer is all here: it counts only if the line then stays silent for 3.5
            # characters (about 4 ms at 9600 baud: waited out here, bounded)
            wait = self.gap_us - ticks_diff(now_us, self.t_last)
            if wait > 0:
                sleep_us(wait)
                now_us = ticks_add(now_us, wait)
            self._read(now_us)
            g = self.got
        if g > n:
            return self._finish(_E_TRAILING)
        if n > len(rx):  # more registers than a frame here may hold (profiles ask for <= 32)
            return self._finish(E_FRAME)
        if not _intact(rx, n):
            return self._finish(_E_CRC)
        if rx[0] != self.slave:
            return self._finish(_E_WRONG_SLAVE)
        if rx[1] & 0x80:
            self.exc = rx[2]
            return self._finish(_E_EXCEPTION)
        if rx[1] != self.fc or (self.count and rx[2] != 2 * self.count):
            return self._finish(E_FRAME)
        return self._finish(OK)
