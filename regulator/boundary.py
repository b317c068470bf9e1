"""The ingest's border: one MQTT message in, a checked payload or a refusal with its reason out.

Nothing a publisher sends may raise out of here: the checks run cheapest first (size, topic,
nesting depth before the parser, then JSON, schema, calendar, topic against payload), and any
failure is a Refused whose reason lands in the `rejected` table. The schema is chosen by the
topic, never by the payload's own `dataschema` (a list there must not pick, or break, anything).
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from gasguard.gateway import schemas
from gasguard.protocol import cloudevents, strictjson

MAX_BYTES = 32 * 1024  # the largest payload the gateway makes (a dead letter's 1 KiB body as hex,
# a state with 8 detectors) is under 4 KiB: the cap leaves room and bounds the parser's work
MAX_DEPTH = 8  # the deepest legitimate payload (state → data → detectors → item) is 4
TIME_FIELDS = ("time", "received", "device_time", "last_seen")
# Clocks gone wrong. A time more than FUTURE_SLACK_S past the ingest's own clock would hold a
# device "last seen" and push a hazard's deadline out for ever; a board time before CLOCK_FLOOR
# is a board that has not been given the time yet (its clock starts at 2000-01-01) and would
# file a new alarm 26 years ago, overdue at once. The message as it came keeps the claim.
FUTURE_SLACK_S = 300.0
CLOCK_FLOOR = 1_577_836_800.0  # 2020-01-01T00:00:00Z

# topic kind -> (schema file, the dataschema it must name)
SCHEMAS = {
    "events": ("event.schema.json", cloudevents.SCHEMA_EVENT),
    "state": ("state.schema.json", cloudevents.SCHEMA_STATE),
    "status": ("gateway-status.schema.json", cloudevents.SCHEMA_GATEWAY),
    "rejected": ("rejected.schema.json", cloudevents.SCHEMA_REJECTED),
    "commissioning": ("commissioning.schema.json", cloudevents.SCHEMA_COMMISSIONING),
}
# a commissioning record (retained, per device; regulator/records.py judges the record inside):
# the record's own cap (protocol/record.py) with room for its envelope, and its nesting
RECORD_MAX_BYTES = 320 * 1024
RECORD_MAX_DEPTH = 16
DEVICE_KINDS = ("events", "state", "commissioning")
# a gateway status's counts (the schema bounds them 0..2^32-1)
STATUS_COUNTS = ("devices_online", *cloudevents.STATUS_FIGURES)
# the event kinds a board itself raises: their id is {device}:{instance}:{boot}:{seq}
BOARD_KINDS = frozenset(cloudevents.EVENT_TYPES)
HEX = "0123456789abcdef"
IDENT = re.compile(r"[A-Za-z0-9_.:-]{1,32}\Z")  # a site, device or gateway id (the schemas')


class Refused(ValueError):
    """A message ingest will not store; str() is the reason kept in `rejected`."""


@dataclass(frozen=True)
class Message:
    """A checked message: kind is the topic's (events, state, status, rejected)."""

    topic: str
    kind: str
    site: str
    subject: str  # the device, or the gateway for status and rejected
    payload: dict[str, Any]  # its times in canonical_time's spelling
    text: str  # the payload as it came, kept as evidence


def _compile(name: str):
    schema = schemas.load(name)  # the gateway's reader: one place knows where schemas live
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"  # fastjsonschema's dialect
    return fastjsonschema.compile(schema)


_VALIDATORS = {kind: _compile(name) for kind, (name, _) in SCHEMAS.items()}


def topic_site(topic: str) -> str | None:
    """The site a stream topic names (gasguard/v1/{site}/...), whatever follows; None when it
    names none: what a refused message is counted under on the gateways page."""
    parts = topic.split("/", 3)
    if len(parts) == 4 and parts[0] == "gasguard" and parts[1] == "v1" and IDENT.match(parts[2]):
        return parts[2]
    return None


def parse_topic(topic: str) -> tuple[str, str, str]:
    """gasguard/v1/{site}/{device}/events|state|commissioning or
    gasguard/v1/{site}/gateway/{gw}/status|rejected
    -> (kind, site, subject)."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:2] == ["gasguard", "v1"] and parts[4] in DEVICE_KINDS:
        return parts[4], parts[2], parts[3]
    if (
        len(parts) == 6
        and parts[:2] == ["gasguard", "v1"]
        and parts[3] == "gateway"
        and parts[5] in ("status", "rejected")
    ):
        return parts[5], parts[2], parts[4]
    raise Refused("topic: not a GasGuard stream topic")


def decode(raw: bytes, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    if len(raw) > max_bytes:
        raise Refused("size: %d bytes, more than %d" % (len(raw), max_bytes))
    # fewer brackets than the cap cannot nest past it (counted in C): most messages stop here
    opened = raw.count(b"[") + raw.count(b"{")
    if opened > max_depth and strictjson.nesting_depth(raw, max_depth) > max_depth:
        raise Refused("json: nested deeper than %d" % max_depth)
    try:
        text = raw.decode("utf-8")
        return strictjson.loads(text)
    except UnicodeDecodeError:
        raise Refused("json: not UTF-8") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        if isinstance(e, Refused):
            raise
        raise Refused("json: %s" % str(e)[:120]) from None


def calendar_time(value: str, field: str) -> datetime.datetime:
    """The schemas' pattern admits 2025-02-30T10:00:00Z (an older one 2025-13-45T99:99:99Z):
    only a calendar refuses them."""
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        ts = t.timestamp()  # naive 0001-01-01 (a refused record's, unpatterned): ValueError
    except (ValueError, OverflowError):
        raise Refused("%s: %r is not a real UTC date and time" % (field, value[:40])) from None
    if not cloudevents.TIME_MIN <= ts < cloudevents.TIME_MAX:
        raise Refused("%s: %r is outside 2000-2100" % (field, value[:40]))
    return t


def canonical_time(value: str, field: str) -> str:
    """One spelling per instant (milliseconds always), so stored times sort as text."""
    return _spell(calendar_time(value, field).timestamp())


def _spell(t: float) -> str:
    d = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


def _seconds(spelled: str) -> float:
    return datetime.datetime.fromisoformat(spelled.replace("Z", "+00:00")).timestamp()


def _believable(kind: str, payload: dict[str, Any], now: float) -> None:
    """Times a wrong clock made, replaced (see FUTURE_SLACK_S, CLOCK_FLOOR). Retained state and
    gateway status are sent again at every subscribe: a time of theirs in the future becomes
    unknown (None), never the arrival time, or each restart would make a dead device (or
    gateway) look just heard."""
    d = payload["data"]
    late = now + FUTURE_SLACK_S
    if kind in ("state", "status"):
        boxes = ((payload, "time"), (d, "last_seen")) if kind == "state" else ((payload, "time"),)
        for box, key in boxes:
            if _seconds(box[key]) > late:
                box[key] = None
        return
    if "received" in d and _seconds(d["received"]) > late:
        d["received"] = _spell(now)
    t = _seconds(payload["time"])
    if t > late:
        payload["time"] = _spell(now)
    elif kind == "events" and t < CLOCK_FLOOR:  # the gateway's clock, when it has one
        got = d.get("received")
        payload["time"] = got if got and _seconds(got) >= CLOCK_FLOOR else _spell(now)


def _noted(payload: dict[str, Any], now: float) -> None:
    """A record envelope's times are when its gateway took the record, kept in records.sqlite
    and sent the same at every connect: one taken before the box's clock was set (1970) would
    be refused for ever. The record's own signed times are judged; these become the ingest's."""
    for box, key in ((payload, "time"), (payload["data"], "received")):
        try:
            calendar_time(box[key], key)
        except Refused:
            box[key] = _spell(now)


def _schema(kind: str, payload: dict[str, Any]) -> None:
    try:
        _VALIDATORS[kind](payload)
    except fastjsonschema.JsonSchemaException as e:
        name = getattr(e, "name", "") or "payload"
        field = name[5:] if name.startswith("data.") else "payload"
        message = getattr(e, "message", str(e)).replace(name, field, 1)
        raise Refused("schema: %s" % message[:200]) from None


def _whole_counts(payload: dict[str, Any]) -> None:
    """A status's counts as JSON integers: the schema's integer admits 7.0, which no gateway
    writes (its encoder writes ints as ints); a count written as a float is someone else's."""
    d = payload["data"]
    for field in STATUS_COUNTS:
        if field in d and type(d[field]) is not int:
            raise Refused("schema: data.%s must be a whole number, not %r" % (field, d[field]))


def _consistent(kind: str, site: str, subject: str, payload: dict[str, Any]) -> None:
    d = payload["data"]
    if d["site"] != site:
        raise Refused("data.site: %r, but the topic's site is %r" % (d["site"], site))
    if kind in DEVICE_KINDS:
        if d["device"] != subject:
            raise Refused("data.device: %r, but the topic's device is %r" % (d["device"], subject))
        want = "gasguard://%s/%s" % (site, subject)
    else:
        if d["gateway"] != subject:
            raise Refused(
                "data.gateway: %r, but the topic's gateway is %r" % (d["gateway"], subject)
            )
        want = "gasguard://%s/gateway/%s" % (site, subject)
    if payload["source"] != want:
        raise Refused("source: %r, but the topic says %r" % (payload["source"], want))
    if kind != "events":
        return
    kinds = dict(cloudevents.EVENT_TYPES, **cloudevents.GATEWAY_EVENT_TYPES)
    if kinds[d["kind"]] != payload["type"]:
        raise Refused("type: %r does not match data.kind %r" % (payload["type"], d["kind"]))
    if d["kind"] in BOARD_KINDS:
        want_id = cloudevents.event_id(subject, d["instance"], d["boot"], d["seq"])
        if payload["id"] != want_id:  # a forged id could shadow the board's real event
            raise Refused("id: %r, but device, instance, boot and seq make %r"
                          % (payload["id"], want_id))  # fmt: skip
    elif not _gateway_id(subject, d["kind"], payload["id"]):
        # the gateway's own events (gateway/service.py): never in a board id's form, so they
        # cannot take the id of an event the board has yet to send
        raise Refused("id: %r is not %s:%s:<gateway instance>:<boot>:<microseconds>"
                      % (payload["id"][:80], subject, d["kind"].split(".")[-1]))  # fmt: skip


def _gateway_id(subject: str, kind: str, ce_id: str) -> bool:
    head = "%s:%s:" % (subject, kind.split(".")[-1])
    if not ce_id.startswith(head):
        return False
    parts = ce_id[len(head) :].split(":")
    return (len(parts) == 3 and len(parts[0]) == 16 and not parts[0].strip(HEX)
            and all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts[1:]))  # fmt: skip


def check(topic: str, raw: bytes, now: float | None = None) -> Message:
    """Raise Refused, or return the message with its times spelled one way and those a wrong
    clock made replaced (_believable; `now`: the ingest's clock by default)."""
    kind, site, subject = parse_topic(topic)
    if kind == "commissioning":
        payload = decode(raw, RECORD_MAX_BYTES, RECORD_MAX_DEPTH)
    else:
        payload = decode(raw)
    if not isinstance(payload, dict):
        raise Refused("json: not an object")
    _schema(kind, payload)
    if kind == "status":
        _whole_counts(payload)
    d = payload["data"]
    if kind == "commissioning":
        _noted(payload, time.time() if now is None else now)
    payload["time"] = canonical_time(payload["time"], "time")
    for field in TIME_FIELDS[1:]:
        if field in d:
            d[field] = canonical_time(d[field], "data." + field)
    _consistent(kind, site, subject, payload)
    if kind != "commissioning":  # its times are the gateway's note; the ingest's clock counts
        _believable(kind, payload, time.time() if now is None else now)
    return Message(topic, kind, site, subject, payload, raw.decode("utf-8"))
