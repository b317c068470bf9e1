# The signed commissioning record (issue 26): how its bytes are made, signed and checked. Both
# sides import this one seam: `gasguard commission` signs with the installer's Ed25519 key, the
# regulator verifies against the installer's registered public key. CPython only (it stays off
# the board: firmware/manifest.py); `cryptography` is imported where it is needed, so a site box
# that only carries records never loads it.
#
# The signed bytes are the record without its "signature" member, as canonical JSON: keys sorted,
# no whitespace, UTF-8 (ensure_ascii off: 张三 is signed as written), floats refused (a
# float's text differs between writers; readings and times in the record are integers or
# strings), and integers beyond 2^53 (I-JSON). The signature member:
#   {"alg": "ed25519", "key_id": <first 16 hex of sha256(raw public key)>,
#    "public_key": <base64 raw 32 bytes>, "value": <base64 64-byte signature>}
# A verifier never trusts "public_key" by itself: it looks up key_id among registered installers
# and checks that the registered key equals it.

import base64
import hashlib
import json

SCHEMA = "urn:gasguard:schema:commissioning-record:1"
ALG = "ed25519"
MAX_BYTES = 256 * 1024  # a record with its photos' hashes, not the photos: far below this


class RecordError(ValueError):
    """The record cannot be signed or is not validly signed (the message says which)."""


INT_MAX = 2**53 - 1  # I-JSON (RFC 7493): what every reader holds exactly


def _no_floats(v, path="$"):
    if isinstance(v, float):
        raise RecordError("%s: a float (%r): write readings as integers or strings" % (path, v))
    if isinstance(v, int) and abs(v) > INT_MAX:
        # the gateway's publisher (orjson) cannot write past 64 bits, a float-reading parser
        # rounds past 2^53: a record added but never delivered, or verified by no one else
        raise RecordError("%s: a whole number beyond 2^53: write it as a string" % path)
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise RecordError("%s: a key that is not a string" % path)
            _no_floats(x, path + "." + k)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _no_floats(x, "%s[%d]" % (path, i))


def canonical(record):
    """The bytes a signature covers: the record without "signature", canonical JSON."""
    if not isinstance(record, dict):
        raise RecordError("a record is a JSON object")
    body = {k: v for k, v in record.items() if k != "signature"}
    _no_floats(body)
    try:
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise RecordError("not JSON: %s" % e) from None
    if len(raw) > MAX_BYTES:
        raise RecordError("%d bytes: more than a record holds (%d)" % (len(raw), MAX_BYTES))
    return raw


def digest(record):
    """sha256 hex of the canonical bytes: the record's name for people and the audit log."""
    return hashlib.sha256(canonical(record)).hexdigest()


def key_id(public_raw):
    return hashlib.sha256(public_raw).hexdigest()[:16]


def new_key():
    """(private PEM bytes, raw public key bytes) for `gasguard installer keygen`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    return pem, public_raw_of(k)


def public_raw_of(private_key):
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw)


def load_private(pem):
    """An Ed25519 private key from PEM bytes (RecordError if it is not one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        k = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise RecordError("not a private key in PEM: %s" % e) from None
    if not isinstance(k, Ed25519PrivateKey):
        raise RecordError("not an Ed25519 key")
    return k


def sign(record, private_key):
    """A copy of the record with its "signature" member, signed by private_key."""
    raw = canonical(record)
    pub = public_raw_of(private_key)
    out = {k: v for k, v in record.items() if k != "signature"}
    out["signature"] = {
        "alg": ALG,
        "key_id": key_id(pub),
        "public_key": base64.b64encode(pub).decode(),
        "value": base64.b64encode(private_key.sign(raw)).decode(),
    }
    return out


def _b64(s, n, what):
    if not isinstance(s, str) or len(s) > 200:
        raise RecordError("signature: %s is not base64" % what)
    try:
        b = base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise RecordError("signature: %s is not base64" % what) from None
    if len(b) != n:
        raise RecordError("signature: %s is %d bytes, not %d" % (what, len(b), n))
    return b


def signer(record):
    """The key_id the record says signed it (RecordError if there is no well-formed signature).
    Look it up among registered installers, then call verify() with the registered key."""
    sig = record.get("signature") if isinstance(record, dict) else None
    if not isinstance(sig, dict):
        raise RecordError("unsigned: no signature")
    if sig.get("alg") != ALG:
        raise RecordError("signature: algorithm %r, not %s" % (sig.get("alg"), ALG))
    pub = _b64(sig.get("public_key"), 32, "public_key")
    if sig.get("key_id") != key_id(pub):
        raise RecordError("signature: key_id does not match its public key")
    return sig["key_id"]


def verify(record, registered_public_raw):
    """Check the record was signed by the registered key and not changed since. Returns the
    record's digest; RecordError says why not."""
    signer(record)
    sig = record["signature"]
    pub = _b64(sig.get("public_key"), 32, "public_key")
    if pub != registered_public_raw:
        raise RecordError("signed by a key that is not the installer's registered key")
    value = _b64(sig.get("value"), 64, "value")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = canonical(record)
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(value, raw)
    except InvalidSignature:
        raise RecordError("the signature does not match: the record was altered after "
                          "signing") from None
    return hashlib.sha256(raw).hexdigest()
