# HMAC-SHA256 (RFC 2104) and CRC-32 from hashlib and binascii alone (MicroPython has no hmac
# module), so the device and the gateway compute the same tag from the same code.
import hashlib

try:
    from binascii import crc32
except ImportError:  # a MicroPython build without binascii.crc32
    crc32 = None

try:
    from hmac import compare_digest as _compare  # CPython: constant time, in C
except ImportError:  # MicroPython: the loop in check()
    _compare = None

TAG_LEN = 16  # truncated HMAC-SHA256 (RFC 2104 section 5 allows >= 80 bits); 128 bits here


def _crc32_slow(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def crc(data):
    if crc32 is None:
        return _crc32_slow(data)
    return crc32(data) & 0xFFFFFFFF


class Signer:
    """Holds one key's padded inner and outer blocks; tag() returns the truncated HMAC."""

    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("key must be at least 16 bytes")
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        k = bytearray(64)
        k[: len(key)] = key
        self._ipad = bytes(b ^ 0x36 for b in k)
        self._opad = bytes(b ^ 0x5C for b in k)
        # where hashes can be copied (CPython: the gateway checks a tag per frame), the padded
        # blocks are hashed once and each tag starts from copies: a third less time a tag
        h = hashlib.sha256(self._ipad)
        if hasattr(h, "copy"):
            self._inner = h
            self._outer = hashlib.sha256(self._opad)
        else:
            self._inner = None

    def tag(self, *parts):
        if self._inner is None:
            inner = hashlib.sha256(self._ipad)
            outer = hashlib.sha256(self._opad)
        else:
            inner = self._inner.copy()
            outer = self._outer.copy()
        for p in parts:
            inner.update(p)
        outer.update(inner.digest())
        return outer.digest()[:TAG_LEN]

    def check(self, tag, *parts):
        good = self.tag(*parts)
        if len(tag) != len(good):
            return False
        if _compare is not None:
            return _compare(good, tag)
        diff = 0
        for i in range(len(good)):  # constant time: no early exit
            diff |= good[i] ^ tag[i]
        return diff == 0
