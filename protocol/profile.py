# Detector register profiles: a JSON data file per detector model says which Modbus registers to
# read and what their values mean. The loader checks a profile once; decoding then runs on the
# device's safety loop, so it uses small integers only (tenths of %LEL) and allocates nothing.
from . import const
from .catalogue import DETECTOR_STATES

# Detector states, ordered by severity: when several rules fire, the highest code wins. Private
# ones are compiled in on MicroPython: no name (qstr) kept for them on the device.
OK = 0
WARMUP = 1
_INHIBIT = const(2)
_CALIBRATION = const(3)
FAULT = 4
_EOL = const(5)
NOANSWER = 6  # set by the poller, never by a profile
OVER = 7  # a reading above the measuring range (valid_tenths' top): a high alarm, not a fault
STATE_NAMES = DETECTOR_STATES  # indexed by the codes above

BAD = -999999  # tenths value of a reading that is not a number (NaN, -inf, out of raw range)
# tenths value of a float32 reading too large to hold (2**23 %LEL and up, +inf): still over range
HUGE = 0x3FFFFFFF  # (the largest small int on a 32-bit MicroPython: no allocation)


def _f32_tenths(hi, lo):
    # IEEE float32 from two registers -> round(value * 10) with small-integer arithmetic only
    exp = (hi >> 7) & 0xFF
    if exp == 255:  # infinite or NaN: +inf is a reading beyond any range, the rest no reading
        return HUGE if lo == 0 and hi == 0x7F80 else BAD
    if exp == 0:
        return 0  # zero or subnormal
    full10 = (0x800000 | ((hi & 0x7F) << 16) | lo) * 10
    shift = 150 - exp
    if shift <= 0:  # |value| >= 2**23 %LEL: far above any range, or far below it
        return BAD if hi & 0x8000 else HUGE
    if shift > 28:
        v = 0
    else:
        v = (full10 + (1 << (shift - 1))) >> shift
    return -v if hi & 0x8000 else v


class ProfileError(ValueError):
    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


class Profile:
    """A checked profile (made by profile_parse) and its allocation-free decoders."""

    # --- hot path: no allocation ---------------------------------------------------------------

    def tenths(self, buf, at):
        """Reading in tenths of %LEL from register data buf[at:] (2 bytes per register)."""
        i = at + 2 * self.roff
        if self.rtype == 2:
            hi = (buf[i] << 8) | buf[i + 1]
            lo = (buf[i + 2] << 8) | buf[i + 3]
            if self.swap:
                hi, lo = lo, hi
            return _f32_tenths(hi, lo)
        raw = (buf[i] << 8) | buf[i + 1]
        if self.rtype == 0 and raw & 0x8000:
            raw -= 0x10000
        if raw < self.raw_lo or raw > self.raw_hi:
            return BAD
        return raw * self.mul // self.div + self.add

    def state(self, buf, at, tenths):
        """Detector state from the same register data. A reading below valid_tenths (under
        range) or not a number is FAULT; above it, OVER: gas beyond what the detector can
        measure, which outranks every status rule (a saturated detector may flag a fault too)."""
        st = OK
        if tenths == BAD or tenths < self.valid_lo:
            st = FAULT
        elif tenths > self.valid_hi:
            return OVER
        for kind, off, table, other in self.rules:
            i = at + 2 * off
            raw = (buf[i] << 8) | buf[i + 1]
            if kind == 0:
                s = table.get(raw, other)
            elif kind == 1:
                s = OK
                for mask, bs in table:
                    if raw & mask and bs > s:
                        s = bs
            else:
                s = OK if raw == table else other
            if s > st:
                st = s
        return st
