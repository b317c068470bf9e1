# Message catalogue of the device<->gateway link: type numbers, body constructors, validation.
#
# Device -> gateway types are below 0x80, gateway -> device types are 0x80 and above, so a frame
# reflected back at its sender is refused. There is deliberately no message, command or field that
# opens, energises or resets a valve: reopening happens only by a person at the device.
from . import cbor
from .catalogue import (  # noqa: F401 - re-exported: the catalogue's names live here too
    ACK,
    ALARM_LEVELS,
    BIRTH,
    COMMAND,
    COMMANDS,
    DETECTOR_STATES,
    EVENT,
    EVENT_KINDS,
    HEARTBEAT,
    INST_LEN,
    MAX_ACKS,
    NONCE_LEN,
    REPLY,
    TIME,
    VALVE_KINDS,
    VALVE_STATES,
)

TYPE_NAMES = {
    BIRTH: "birth",
    HEARTBEAT: "heartbeat",
    EVENT: "event",
    REPLY: "reply",
    ACK: "ack",
    TIME: "time",
    COMMAND: "command",
}
FROM_DEVICE = (BIRTH, HEARTBEAT, EVENT, REPLY)
FROM_GATEWAY = (ACK, TIME, COMMAND)


class MessageError(ValueError):
    """A body that does not match the catalogue; .field names the offending field."""

    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


# --- checks ------------------------------------------------------------------------------------


def _need(body, field, kinds, optional=False):
    if field not in body:
        if optional:
            return None
        raise MessageError(field, "missing")
    v = body[field]
    if v is True or v is False:
        if bool not in kinds:
            raise MessageError(field, "must not be a boolean")
    elif not isinstance(v, kinds):
        raise MessageError(field, "wrong type %s" % type(v).__name__)
    return v


def _uint(body, field, optional=False, top=1 << 32):
    v = _need(body, field, (int,), optional)
    if v is not None and not 0 <= v < top:
        raise MessageError(field, "out of range")
    return v


def _one_of(body, field, allowed, optional=False):
    v = _need(body, field, (str,), optional)
    if v is not None and v not in allowed:
        raise MessageError(field, "unknown value %r" % v)
    return v


def _no_extra(body, allowed):
    for k in body:
        if k not in allowed:
            raise MessageError(str(k), "unknown field")


def _text(body, field, top, optional=False):
    v = _need(body, field, (str,), optional)
    if v is not None and not 0 < len(v) <= top:
        raise MessageError(field, "length must be 1..%d" % top)
    return v


def _number(body, field, optional=False):
    return _need(body, field, (int, float), optional)


def _nonce(body, field, optional=True):
    v = _need(body, field, (bytes,), optional)
    if v is not None and len(v) != NONCE_LEN:
        raise MessageError(field, "must be %d bytes" % NONCE_LEN)
    return v


def _instance(body, field):
    v = _text(body, field, INST_LEN)
    if len(v) != INST_LEN or v.strip("0123456789abcdef"):
        raise MessageError(field, "must be %d lowercase hex characters" % INST_LEN)
    return v


def _event_id(pair, field):
    if not isinstance(pair, list) or len(pair) != 2:
        raise MessageError(field, "event id must be [boot, seq]")
    for v in pair:
        if not isinstance(v, int) or v is True or v is False or not 0 <= v < 1 << 32:
            raise MessageError(field, "event id must be two unsigned 32-bit integers")


def _check_birth(b):
    _no_extra(b, ("dev", "inst", "fw", "cfg", "cause", "valve", "dets", "time", "nonce", "gn"))
    _text(b, "dev", 32)
    _instance(b, "inst")
    _nonce(b, "nonce")
    _nonce(b, "gn")
    _text(b, "fw", 32)
    _text(b, "cfg", 64)
    _text(b, "cause", 16)
    _one_of(b, "valve", VALVE_KINDS)
    dets = _need(b, "dets", (list,))
    if not 1 <= len(dets) <= 8:
        raise MessageError("dets", "1..8 detectors")
    for i, d in enumerate(dets):
        if not isinstance(d, dict):
            raise MessageError("dets[%d]" % i, "must be a map")
        _no_extra(d, ("addr", "gas", "profile"))
        _uint(d, "addr", top=248)
        _text(d, "gas", 16)
        _text(d, "profile", 32)
    _uint(b, "time", optional=True, top=1 << 40)


def _check_heartbeat(b):
    _no_extra(b, ("up", "valve", "alarm", "loop", "heap", "pending", "lost", "dets", "time"))
    _uint(b, "up", top=1 << 40)
    _one_of(b, "valve", VALVE_STATES)
    _one_of(b, "alarm", ALARM_LEVELS)
    loop = _need(b, "loop", (dict,))
    _no_extra(loop, ("period_ms", "mean_us", "max_us", "overruns"))
    for f in ("period_ms", "mean_us", "max_us", "overruns"):
        _uint(loop, f)
    _uint(b, "heap")
    _uint(b, "pending")
    _uint(b, "lost")
    dets = _need(b, "dets", (list,))
    if len(dets) > 8:
        raise MessageError("dets", "at most 8 detectors")
    for i, d in enumerate(dets):
        if not isinstance(d, dict):
            raise MessageError("dets[%d]" % i, "must be a map")
        _no_extra(d, ("state", "lel", "errors"))
        _one_of(d, "state", DETECTOR_STATES)
        _number(d, "lel", optional=True)
        _uint(d, "errors")
    _uint(b, "time", optional=True, top=1 << 40)


def _check_event(b):
    _no_extra(b, ("id", "kind", "up", "time", "det", "lel", "over", "n", "valve", "detail"))
    _event_id(_need(b, "id", (list,)), "id")
    _one_of(b, "kind", EVENT_KINDS)
    _uint(b, "up", top=1 << 40)
    _uint(b, "time", optional=True, top=1 << 40)
    _uint(b, "det", optional=True, top=8)
    _number(b, "lel", optional=True)
    if _need(b, "over", (bool,), optional=True) is False:
        raise MessageError("over", "present only when true")
    _uint(b, "n", optional=True)
    _one_of(b, "valve", VALVE_STATES, optional=True)
    _text(b, "detail", 96, optional=True)


def _check_reply(b):
    _no_extra(b, ("cmd", "ref", "ok", "data"))
    _one_of(b, "cmd", COMMANDS)
    _uint(b, "ref")
    _need(b, "ok", (bool,))
    _need(b, "data", (dict,), optional=True)


def _check_ack(b):
    _no_extra(b, ("ids",))
    ids = _need(b, "ids", (list,))
    if not 1 <= len(ids) <= MAX_ACKS:
        raise MessageError("ids", "1..%d event ids" % MAX_ACKS)
    for i, pair in enumerate(ids):
        _event_id(pair, "ids[%d]" % i)


def _check_time(b):
    _no_extra(b, ("time", "boot", "nonce", "gn"))
    _uint(b, "time", top=1 << 40)
    _uint(b, "boot")
    _nonce(b, "nonce")
    _nonce(b, "gn")


def _check_command(b):
    _no_extra(b, ("cmd",))
    _one_of(b, "cmd", COMMANDS)


_CHECKS = {
    BIRTH: _check_birth,
    HEARTBEAT: _check_heartbeat,
    EVENT: _check_event,
    REPLY: _check_reply,
    ACK: _check_ack,
    TIME: _check_time,
    COMMAND: _check_command,
}


def validate(mtype, body):
    """Raise MessageError unless body is a valid body of message type mtype."""
    check = _CHECKS.get(mtype)
    if check is None:
        raise MessageError("type", "unknown message type %d" % mtype)
    if not isinstance(body, dict):
        raise MessageError("body", "must be a map")
    check(body)
    return body


def decode_body(mtype, raw):
    """CBOR bytes -> validated body. Raises cbor.CBORError or MessageError."""
    return validate(mtype, cbor.loads(raw))


# --- constructors (each returns a validated body; encode with cbor.dumps) ---------------------


def _opt(body, field, value):
    if value is not None:
        body[field] = value
    return body


def birth(dev, inst, fw, cfg, cause, valve, dets, time=None, nonce=None, gn=None):
    b = {
        "dev": dev,
        "inst": inst,
        "fw": fw,
        "cfg": cfg,
        "cause": cause,
        "valve": valve,
        "dets": dets,
    }
    _opt(b, "time", time)
    _opt(b, "nonce", nonce)
    _opt(b, "gn", gn)
    return validate(BIRTH, b)


def heartbeat(up, valve, alarm, loop, heap, pending, dets, time=None, lost=0):
    b = {
        "up": up,
        "valve": valve,
        "alarm": alarm,
        "loop": loop,
        "heap": heap,
        "pending": pending,
        "lost": lost,
        "dets": dets,
    }
    return validate(HEARTBEAT, _opt(b, "time", time))


def event(
    boot, seq, kind, up, time=None, det=None, lel=None, valve=None, detail=None, over=False, n=None
):
    b = {"id": [boot, seq], "kind": kind, "up": up}
    _opt(b, "time", time)
    _opt(b, "det", det)
    _opt(b, "lel", lel)
    _opt(b, "over", over or None)
    _opt(b, "n", n)
    _opt(b, "valve", valve)
    _opt(b, "detail", detail)
    return validate(EVENT, b)


def reply(cmd, ref, ok, data=None):
    return validate(REPLY, _opt({"cmd": cmd, "ref": ref, "ok": ok}, "data", data))


def ack(ids):
    return validate(ACK, {"ids": [list(i) for i in ids]})


def time_sync(time, boot, nonce=None, gn=None):
    """The gateway's answer to a birth: `nonce` echoes the birth's (the device then trusts this
    gateway session); `gn` is the gateway's challenge, which the device echoes in a birth."""
    b = {"time": time, "boot": boot}
    _opt(b, "nonce", nonce)
    _opt(b, "gn", gn)
    return validate(TIME, b)


def command(cmd):
    return validate(COMMAND, {"cmd": cmd})


def pack(signer, mtype, boot, seq, device, body):
    """Validate body and return the wire bytes of the frame carrying it."""
    from .frame import encode

    return encode(signer, mtype, boot, seq, device, cbor.dumps(validate(mtype, body)))
