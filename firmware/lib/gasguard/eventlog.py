# Append-only, tamper-evident event log in flash (Work Safety Law art. 36: nobody may delete or
# alter alarm records).
#
# Record on disk: u16 length | payload | u32 CRC-32(payload), payload = CBOR
# {"n": index, "p": first 8 bytes of SHA-256 of the previous payload, "e": event body}.
# The chain makes an edited or deleted record show. Records live in segment files of `seg` records
# (segment k holds indices k*seg .. k*seg+seg-1); at most `max_segments` are kept, and the oldest
# is removed first, normally after the gateway acknowledged all of it. A power cut while appending
# leaves a torn last record: open() cuts it off, so at most that record is lost.
import hashlib
import os
import struct

from micropython import const

from gasguard.persist import makedirs, read_bytes, write_atomic
from gasguard.protocol import cbor
from gasguard.protocol.auth import crc

ZERO = bytes(8)


def _digest(payload):
    return hashlib.sha256(payload).digest()[:8]


_MAX_RECORD = const(1024)  # bytes of payload: an event body always fits a link frame


def _records(f):
    """Yield (end offset, payload) of each intact record read from the open file f, one record
    at a time (never the whole segment in RAM); stop at the first torn or corrupt one."""
    pos = 0
    while True:
        head = f.read(2)
        if not head or len(head) < 2:
            return
        length = (head[0] << 8) | head[1]
        if length == 0 or length > _MAX_RECORD:
            return
        body = f.read(length + 4)
        if not body or len(body) < length + 4:
            return
        payload = body[:length]
        if crc(payload) != struct.unpack(">I", body[length:])[0]:
            return
        pos += 6 + length
        yield pos, payload


def _copy_prefix(src, dst, n):
    # rewrite the first n bytes of src as dst, in small pieces
    buf = bytearray(256)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while n > 0:
            got = fi.readinto(buf)
            if not got:
                break
            take = got if got < n else n
            fo.write(buf if take == len(buf) else buf[:take])
            n -= take


class EventLog:
    def __init__(self, root, seg=64, max_segments=8):
        self.dir = root + "/log"
        self.seg = seg
        self.max_segments = max_segments
        self.first = 0  # oldest retained index
        self.next = 0  # index the next record gets
        self.last_digest = ZERO
        self.watermark = -1  # every index <= watermark is acknowledged
        self.acked_above = []  # acknowledged indices above the watermark
        self.torn = 0  # torn records cut off at open (power cuts mid-write)
        self.chain_ok = True
        self.chain_break = -1  # first index whose link to its predecessor does not verify
        self.dropped_unacked = 0
        self.ack_errors = 0  # acknowledgements that could not be written to flash

    def _path(self, k):
        return "%s/%08d.seg" % (self.dir, k)

    def _segments(self):
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".seg") and len(name) == 12:
                try:
                    out.append(int(name[:8]))
                except ValueError:
                    pass
        out.sort()
        return out

    def open(self):
        makedirs(self.dir)
        segs = self._segments()
        expect = None
        prev = None
        for si, k in enumerate(segs):
            path = self._path(k)
            size = os.stat(path)[6]
            good_end = 0
            j = 0
            f = open(path, "rb")
            for end, payload in _records(f):
                try:
                    rec = cbor.loads(payload)
                    n = rec["n"]
                    p = rec["p"]
                except (cbor.CBORError, KeyError, TypeError):
                    break
                if n != k * self.seg + j:
                    break
                if expect is None:
                    self.first = n
                elif n != expect or p != prev:
                    if self.chain_ok:
                        self.chain_ok = False
                        self.chain_break = n
                prev = _digest(payload)
                expect = n + 1
                good_end = end
                j += 1
            f.close()
            if good_end < size:
                if si == len(segs) - 1:
                    # a power cut mid-append: keep the intact prefix
                    self.torn += 1
                    _copy_prefix(path, path + ".tmp", good_end)
                    os.rename(path + ".tmp", path)
                elif self.chain_ok:
                    self.chain_ok = False
                    self.chain_break = k * self.seg + j
        if expect is not None:
            self.next = expect
            self.last_digest = prev
        self._load_acks()
        return self

    def _load_acks(self):
        raw = read_bytes(self.dir + "/acked")
        if raw:
            try:
                w, above = cbor.loads(raw)
                self.watermark = w
                self.acked_above = above
            except (cbor.CBORError, ValueError, TypeError):
                pass  # unreadable: resend everything retained; the gateway dedups

    def _save_acks(self):
        write_atomic(self.dir + "/acked", cbor.dumps([self.watermark, self.acked_above]))

    def append(self, body):
        """Write one event body; returns its index. Raises OSError if the flash write fails."""
        n = self.next
        k = n // self.seg
        if n % self.seg == 0:
            segs = self._segments()
            while len(segs) >= self.max_segments:
                old = segs.pop(0)
                hi = (old + 1) * self.seg
                for i in range(max(old * self.seg, self.watermark + 1), hi):
                    if i not in self.acked_above:
                        self.dropped_unacked += 1
                os.remove(self._path(old))
                self.first = hi
                if self.watermark < hi - 1:
                    self.watermark = hi - 1
                    self.acked_above = [i for i in self.acked_above if i >= hi]
                    self._save_acks()
        payload = cbor.dumps({"n": n, "p": self.last_digest, "e": body})
        rec = struct.pack(">H", len(payload)) + payload + struct.pack(">I", crc(payload))
        digest = _digest(payload)  # before the write: after it, nothing may fail
        with open(self._path(k), "ab") as f:
            f.write(rec)
        self.last_digest = digest
        self.next = n + 1
        return n

    def read(self, n):
        """The event body of record n, or None if it is no longer (or not yet) in the log."""
        if n < self.first or n >= self.next:
            return None
        k = n // self.seg
        try:
            f = open(self._path(k), "rb")
        except OSError:
            return None
        try:
            for _ in range(n - k * self.seg):  # skip the records before it without reading them
                head = f.read(2)
                if not head or len(head) < 2:
                    return None
                f.seek(((head[0] << 8) | head[1]) + 4, 1)
            for _, payload in _records(f):
                return cbor.loads(payload)["e"]
            return None
        finally:
            f.close()

    def acked(self, n):
        return n <= self.watermark or n in self.acked_above

    def ack(self, n):
        """Mark record n acknowledged by the gateway (durably). False if it already was."""
        if self.acked(n) or n >= self.next:
            return False
        self.acked_above.append(n)
        self.acked_above.sort()
        while self.acked_above and self.acked_above[0] == self.watermark + 1:
            self.watermark = self.acked_above.pop(0)
        try:
            self._save_acks()
        except OSError:
            # the flash is full or failing: the ack holds in RAM and the next one saves it
            # (lost in a power cut, the events are only sent again: the gateway dedups them)
            self.ack_errors += 1
        return True

    def unacked(self, start=0, limit=8):
        """Up to `limit` indices of unacknowledged records, oldest first, from `start`."""
        out = []
        i = max(start, self.first, self.watermark + 1)
        while i < self.next and len(out) < limit:
            if i not in self.acked_above:
                out.append(i)
            i += 1
        return out

    def pending(self):
        return self.next - max(self.first, self.watermark + 1) - len(self.acked_above)

