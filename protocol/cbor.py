# Small CBOR (RFC 8949) codec that runs unchanged on MicroPython and CPython.
#
# dumps() always writes the canonical form cbor2 writes with canonical=True: definite lengths,
# shortest integer heads, the shortest float that is exact, map keys sorted by their encoding
# (length first, then bytes). loads() accepts any well-formed item of the supported types and
# raises CBORError for everything else, before allocating anything the input cannot back.
import struct

from . import const

_MAX_DEPTH = const(16)  # arrays/maps nested deeper than this are refused (bounded recursion)
_U64 = 1 << 64


class CBORError(ValueError):
    pass


# --- encoder -----------------------------------------------------------------------------------


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(struct.pack(">I", n))
    else:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", n))


def _half_bits(f32):
    # IEEE half bits for a float32 bit pattern if the value is exactly representable, else -1.
    sign = (f32 >> 16) & 0x8000
    exp = (f32 >> 23) & 0xFF
    mant = f32 & 0x7FFFFF
    if exp == 0:
        return sign if mant == 0 else -1
    e = exp - 127
    if -14 <= e <= 15:
        if mant & 0x1FFF:
            return -1
        return sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:
        full = 0x800000 | mant
        shift = -(e + 1)
        if full & ((1 << shift) - 1):
            return -1
        return sign | (full >> shift)
    return -1


def _float(out, v):
    if v != v:
        out.extend(b"\xf9\x7e\x00")  # canonical NaN
        return
    if v in (float("inf"), float("-inf")):
        out.extend(b"\xf9\x7c\x00" if v > 0 else b"\xf9\xfc\x00")
        return
    try:
        single = struct.pack(">f", v)
    except OverflowError:
        single = None
    if single is not None and struct.unpack(">f", single)[0] == v:
        h = _half_bits(struct.unpack(">I", single)[0])
        if h >= 0:
            out.append(0xF9)
            out.extend(struct.pack(">H", h))
        else:
            out.append(0xFA)
            out.extend(single)
        return
    out.append(0xFB)
    out.extend(struct.pack(">d", v))


def _enc(out, v, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("nesting deeper than %d" % _MAX_DEPTH)
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        if v >= 0:
            if v >= _U64:
                raise CBORError("integer above 2**64-1")
            _head(out, 0, v)
        else:
            n = -1 - v
            if n >= _U64:
                raise CBORError("integer below -2**64")
            _head(out, 1, n)
    elif isinstance(v, float):
        _float(out, v)
    elif isinstance(v, str):
        b = v.encode()
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, 2, len(v))
        out.extend(v)
    elif isinstance(v, (list, tuple)):
        _head(out, 4, len(v))
        for item in v:
            _enc(out, item, depth + 1)
    elif isinstance(v, dict):
        items = []
        for k in v:
            kb = bytearray()
            _enc(kb, k, depth + 1)
            items.append((len(kb), bytes(kb), k))
        items.sort()
        _head(out, 5, len(items))
        for _, kb, k in items:
            out.extend(kb)
            _enc(out, v[k], depth + 1)
    else:
        raise CBORError("cannot encode type %s" % type(v).__name__)


def dumps(obj):
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


# --- decoder -----------------------------------------------------------------------------------

_BREAK = object()


def _half(h):
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant / 16777216.0  # mant * 2**-24
    elif exp == 31:
        val = float("inf") if mant == 0 else float("nan")
    elif exp >= 25:
        val = float((1024 + mant) << (exp - 25))
    else:
        val = (1024 + mant) / float(1 << (25 - exp))
    return -val if h & 0x8000 else val


class _Decoder:
    def __init__(self, data):
        self.buf = memoryview(data)
        self.pos = 0
        self.end = len(data)

    def take(self, n):
        p = self.pos
        if n > self.end - p:
            raise CBORError("length %d past the end at offset %d" % (n, p))
        self.pos = p + n
        return self.buf[p : p + n]

    def arg(self, info):
        if info < 24:
            return info
        if info == 24:
            return self.take(1)[0]
        if info == 25:
            return struct.unpack(">H", self.take(2))[0]
        if info == 26:
            return struct.unpack(">I", self.take(4))[0]
        if info == 27:
            return struct.unpack(">Q", self.take(8))[0]
        raise CBORError("reserved additional info %d at offset %d" % (info, self.pos - 1))

    def string(self, major, info, depth):
        if info != 31:
            return bytes(self.take(self.arg(info)))
        parts = []  # indefinite length: definite chunks of the same major type until break
        while True:
            ib = self.take(1)[0]
            if ib == 0xFF:
                return b"".join(parts)
            if ib >> 5 != major or ib & 0x1F == 31:
                raise CBORError("bad chunk in indefinite string at offset %d" % (self.pos - 1))
            parts.append(bytes(self.take(self.arg(ib & 0x1F))))

    def item(self, depth):
        if depth > _MAX_DEPTH:
            raise CBORError("nesting deeper than %d" % _MAX_DEPTH)
        ib = self.take(1)[0]
        major = ib >> 5
        info = ib & 0x1F
        if major == 0:
            return self.arg(info)
        if major == 1:
            return -1 - self.arg(info)
        if major == 2:
            return self.string(2, info, depth)
        if major == 3:
            raw = self.string(3, info, depth)
            try:
                return raw.decode()
            except UnicodeError:
                raise CBORError("invalid UTF-8 in text string") from None
        if major == 4:
            out = []
            if info == 31:
                while True:
                    v = self.item(depth + 1)
                    if v is _BREAK:
                        return out
                    out.append(v)
            n = self.arg(info)
            if n > self.end - self.pos:  # every item takes at least one byte
                raise CBORError("array of %d items past the end" % n)
            for _ in range(n):
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise CBORError("unexpected break")
                out.append(v)
            return out
        if major == 5:
            out = {}
            n = -1
            if info != 31:
                n = self.arg(info)
                if 2 * n > self.end - self.pos:
                    raise CBORError("map of %d pairs past the end" % n)
            while n != 0:
                k = self.item(depth + 1)
                if k is _BREAK:
                    if n < 0:
                        return out
                    raise CBORError("unexpected break")
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise CBORError("unexpected break")
                try:
                    if k in out:
                        raise CBORError("duplicate map key")
                    out[k] = v
                except TypeError:
                    raise CBORError("unhashable map key") from None
                n -= 1
            return out
        if major == 6:
            raise CBORError("tags are not supported")
        # major 7
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25:
            return _half(struct.unpack(">H", self.take(2))[0])
        if info == 26:
            return struct.unpack(">f", self.take(4))[0]
        if info == 27:
            return struct.unpack(">d", self.take(8))[0]
        if info == 31:
            if depth == 0:
                raise CBORError("break outside an indefinite item")
            return _BREAK
        if 28 <= info <= 30:
            raise CBORError("reserved additional info %d" % info)
        raise CBORError("unsupported simple value %d" % (info if info < 24 else -1))


def loads(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("expected bytes")
    d = _Decoder(data)
    v = d.item(0)
    if v is _BREAK:
        raise CBORError("break outside an indefinite item")
    if d.pos != d.end:
        raise CBORError("%d trailing bytes" % (d.end - d.pos))
    return v
