# Fixed-size queue of events raised by the safety loop. The loop only stores small integers here
# (no allocation); the log task drains it in the slack and writes the records to flash.
from array import array

from micropython import const

# Event kinds: indexes into gasguard.protocol.messages.EVENT_KINDS
NO_DET = const(255)  # the detector of an event about none (boot, reset, valve): a byte

ALARM_LOW = const(0)
ALARM_HIGH = const(1)
ALARM_CLEAR = const(2)
DET_FAULT = const(3)
DET_RESTORED = const(4)
VALVE_CLOSED = const(5)
VALVE_FAULT = const(6)
ACK = const(7)
RESET = const(8)
RESET_REFUSED = const(9)
SELFTEST = const(10)
TAMPER = const(11)
BOOT = const(12)
EVENTS_LOST = const(13)  # n events lost on the board (n in the queue's tenths slot)

# Detail codes, turned into text only when the record is written
D_NONE = const(0)
_D_BOOT = const(1)  # valve closed at boot: it reopens only by a reset on site
D_HIGH = const(2)
D_LOW = const(3)
D_FAULT = const(4)
D_VALVE_FAULT = const(5)
D_GAS = const(6)  # reset refused: gas at or above the low alarm set point
D_UNHEALTHY = const(7)  # reset refused: a detector cannot vouch for the air
_D_UNCONFIRMED = const(8)  # low alarm on one detector, awaiting a second (GB 16808-2025)
D_DECREASING = const(9)  # high alarm fell back to low
D_STUCK_OPEN = const(10)  # valve commanded closed, position input says open
D_UNEXPECTED_CLOSE = const(11)  # valve commanded open, position input says closed
_D_PULL_KNOB = const(12)  # latching valve: reset accepted, the person must pull the knob
D_KNOB_TIMEOUT = const(13)
D_CONFIRMED = const(14)
D_OVER = const(15)  # high alarm: above the detector's measuring range
D_LOG_FULL = const(16)  # events lost: the flash log rotated before the gateway acknowledged them
D_QUEUE_FULL = const(17)  # events lost: the loop's event queue overflowed
D_STATE_BASE = const(32)  # + detector state code (profile.FAULT, NOANSWER, ...)

# texts by detail code (index); kept short: every string here stays in RAM on the device
DETAILS = (
    None,
    "closed at boot; reset on site to reopen",
    "high alarm",
    "low alarm",
    "detector fault",
    "valve fault",
    "gas at or above the low alarm set point",
    "a detector is not healthy",
    "awaiting confirmation by a second detector",
    "fell back from high to low",
    "commanded closed but position input says open",
    "commanded open but position input says closed",
    "reset accepted: pull the valve knob to reopen",
    "valve knob not pulled in time",
    "confirmed by a second detector",
    "over range: above the detector's measuring range",
    "unacknowledged events dropped: flash log full",
    "event queue overflow",
)


def detail_text(code, state_names):
    if code >= D_STATE_BASE:
        return "detector state " + state_names[code - D_STATE_BASE]
    return DETAILS[code] if 0 <= code < len(DETAILS) else None


class EventQueue:
    def __init__(self, size=32):
        # packed arrays, not lists: a fifth of the heap, and storing a small int in either
        # allocates nothing
        self.size = size
        self.kind = bytearray(size)
        self.det = bytearray(size)  # detector index, NO_DET: none
        self.tenths = array("i", bytes(4 * size))
        self.detail = bytearray(size)
        self.up_s = array("i", bytes(4 * size))
        self.head = 0  # next to read
        self.count = 0
        self.lost = 0

    def push(self, kind, det, tenths, detail, up_s):
        if self.count == self.size:
            self.lost += 1  # keep the oldest: the first events of an incident matter most
            return
        i = (self.head + self.count) % self.size
        self.kind[i] = kind
        self.det[i] = det
        self.tenths[i] = tenths
        self.detail[i] = detail
        self.up_s[i] = up_s
        self.count += 1

    def pop(self):
        """Index of the oldest event (read the arrays, then call done()), or -1."""
        return self.head if self.count else -1

    def done(self):
        self.head = (self.head + 1) % self.size
        self.count -= 1
