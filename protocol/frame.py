# Link framing: 0x00 | COBS(header | CBOR body | tag | CRC-32) | 0x00
#
# header = version u8 | type u8 | boot u32 | seq u32 | id length u8 | device id (ASCII)
# tag    = HMAC-SHA256(device key, header | body)[:16]
# CRC-32 = over header | body | tag, big-endian; it comes last so that line noise anywhere reads
#          as "crc" and only an intact frame with a wrong tag reads as "auth" (forgery, wrong key).
# (boot, seq) are the sender's transmission counters: the receiver's replay window uses them.
# A leading 0x00 lets the receiver resynchronise even when noise precedes the frame.
import struct

from . import PROTOCOL_VERSION, const
from .auth import TAG_LEN, Signer, crc
from .cobs import COBSError
from .cobs import decode as cobs_decode
from .cobs import encode_delimited as cobs_encode_delimited

MAX_FRAME = 1024  # bytes before COBS; a frame larger than this is never built nor accepted
# private constants are compiled in on MicroPython: no name (qstr) kept for them on the device
_MAX_ID = const(32)
_FIXED = const(11)  # version, type, boot, seq, id length
MAX_WIRE = MAX_FRAME + MAX_FRAME // 254 + 2

# Reasons a received frame is dropped; counters are keyed by these strings.
OVERSIZE = "oversize"
COBS = "cobs"
SHORT = "short"
CRC = "crc"
VERSION = "version"
HEADER = "header"
UNKNOWN = "unknown-device"
AUTH = "auth"
REASONS = (OVERSIZE, COBS, SHORT, CRC, VERSION, HEADER, UNKNOWN, AUTH)


class FrameError(ValueError):
    pass


def _valid_id(dev):
    if not 1 <= len(dev) <= _MAX_ID:
        return False
    for c in dev:
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in b"-_.:"):
            return False
    return True


class Frame:
    __slots__ = ("version", "mtype", "boot", "seq", "device", "body")

    def __init__(self, version, mtype, boot, seq, device, body):
        self.version = version
        self.mtype = mtype
        self.boot = boot
        self.seq = seq
        self.device = device
        self.body = body

    def __repr__(self):
        return "Frame(type=%d, device=%s, boot=%d, seq=%d, %d body bytes)" % (
            self.mtype,
            self.device,
            self.boot,
            self.seq,
            len(self.body),
        )


class Dropped:
    # device: the header's id, for drops after the header was read (unknown-device, auth)
    __slots__ = ("reason", "length", "device")

    def __init__(self, reason, length, device=None):
        self.reason = reason
        self.length = length
        self.device = device

    def __repr__(self):
        return "Dropped(%s, %d bytes)" % (self.reason, self.length)


def encode(signer, mtype, boot, seq, device, body):
    """Return the wire bytes of one frame (a bytearray). device is a str; body is already
    CBOR."""
    dev = device.encode()
    if not _valid_id(dev):
        raise FrameError("device id must be 1-32 of [A-Za-z0-9-_.:]")
    if not (0 <= mtype < 256 and 0 <= boot < 1 << 32 and 0 <= seq < 1 << 32):
        raise FrameError("type, boot or seq out of range")
    body_at = _FIXED + len(dev)
    tag_at = body_at + len(body)
    n = tag_at + TAG_LEN + 4
    if n > MAX_FRAME:
        raise FrameError("frame larger than %d bytes" % MAX_FRAME)
    # built in place in one buffer: on the device every intermediate copy is a heap block
    raw = bytearray(n)
    struct.pack_into(">BBIIB", raw, 0, PROTOCOL_VERSION, mtype, boot, seq, len(dev))
    raw[_FIXED:body_at] = dev
    raw[body_at:tag_at] = body
    mv = memoryview(raw)
    raw[tag_at : n - 4] = signer.tag(mv[:tag_at])  # header | body
    struct.pack_into(">I", raw, n - 4, crc(mv[: n - 4]))
    return cobs_encode_delimited(raw)


def parse(raw, signer_for):
    """Check one un-COBSed frame; return a Frame or a Dropped. signer_for(device_id) -> Signer
    or None for a device we hold no key for."""
    n = len(raw)
    if n < _FIXED + 1 + 1 + TAG_LEN + 4:  # shorter than the shortest id and a one-byte body
        return Dropped(SHORT, n)
    if crc(memoryview(raw)[: n - 4]) != struct.unpack(">I", raw[n - 4 :])[0]:
        return Dropped(CRC, n)
    if raw[0] != PROTOCOL_VERSION:
        return Dropped(VERSION, n)
    idlen = raw[10]
    body_at = _FIXED + idlen
    if idlen == 0 or idlen > _MAX_ID or body_at >= n - TAG_LEN - 4:
        return Dropped(HEADER, n)
    dev = bytes(raw[_FIXED:body_at])
    if not _valid_id(dev):
        return Dropped(HEADER, n)
    device = dev.decode()
    signer = signer_for(device)
    if signer is None:
        return Dropped(UNKNOWN, n, device)
    mv = memoryview(raw)
    tag_at = n - 4 - TAG_LEN
    if not signer.check(mv[tag_at : n - 4], mv[:body_at], mv[body_at:tag_at]):
        return Dropped(AUTH, n, device)
    _, mtype, boot, seq = struct.unpack(">BBII", raw[:10])
    return Frame(raw[0], mtype, boot, seq, device, bytes(raw[body_at:tag_at]))


class FrameDecoder:
    """Streaming decoder: feed() bytes as they arrive, get back Frames and Drops in order.

    Resynchronises on every 0x00. A run longer than MAX_WIRE without a delimiter is dropped once
    as oversize and skipped up to the next 0x00, so memory stays bounded whatever arrives.
    """

    def __init__(self, signer_for):
        if isinstance(signer_for, Signer):
            only = signer_for
            signer_for = lambda _dev: only  # noqa: E731
        self._signer_for = signer_for
        self._buf = bytearray()
        self._skipping = False
        self.counts = {}  # "ok" or a reason -> frames; a key appears with its first frame

    def _result(self, seg):
        try:
            raw = cobs_decode(seg)
        except COBSError:
            return Dropped(COBS, len(seg))
        if len(raw) > MAX_FRAME:
            return Dropped(OVERSIZE, len(raw))
        return parse(raw, self._signer_for)

    def feed(self, data):
        if isinstance(data, (bytes, bytearray)):
            out = self._feed_runs(data)
        else:  # a memoryview (the device's receive buffer): byte by byte, allocating nothing
            out = self._feed_bytes(data)
        counts = self.counts
        for r in out:
            key = "ok" if isinstance(r, Frame) else r.reason
            counts[key] = counts.get(key, 0) + 1
        return out

    def _feed_runs(self, data):
        # whole runs between delimiters at a time: the same results as _feed_bytes, faster
        out = []
        buf = self._buf
        start = 0
        n = len(data)
        while start < n:
            z = data.find(b"\x00", start)
            end = n if z < 0 else z
            if self._skipping:
                self._skipping = z < 0
            elif len(buf) + end - start > MAX_WIRE:
                out.append(Dropped(OVERSIZE, MAX_WIRE))
                buf[:] = b""
                self._skipping = z < 0
            else:
                buf.extend(data[start:end])
                if z >= 0 and buf:
                    out.append(self._result(buf))
                    buf[:] = b""
            start = end + 1
        return out

    def _feed_bytes(self, data):
        out = []
        buf = self._buf
        for b in data:
            if b == 0:
                if self._skipping:
                    self._skipping = False
                elif buf:
                    out.append(self._result(buf))
                    buf[:] = b""
                continue
            if self._skipping:
                continue
            if len(buf) >= MAX_WIRE:
                out.append(Dropped(OVERSIZE, len(buf)))
                buf[:] = b""
                self._skipping = True
                continue
            buf.append(b)
        return out
