"""Message catalogue validation and the regulator payloads against their JSON Schemas."""

import json
from pathlib import Path

import jsonschema
import pytest

from gasguard.protocol import cloudevents, messages

SCHEMAS = Path(__file__).parents[1] / "protocol" / "schemas"
EXAMPLES = SCHEMAS / "examples"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / (name + ".schema.json")).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


EVENT = _validator("event")
STATE = _validator("state")
GATEWAY = _validator("gateway-status")
REJECTED = _validator("rejected")
COMMISSIONING = _validator("commissioning")
BY_SCHEMA = {
    cloudevents.SCHEMA_COMMISSIONING: COMMISSIONING,
    # the signed record itself (commission's output), named by its own "schema" member
    "urn:gasguard:schema:commissioning-record:1": _validator("commissioning-record"),
    cloudevents.SCHEMA_EVENT: EVENT,
    cloudevents.SCHEMA_STATE: STATE,
    cloudevents.SCHEMA_GATEWAY: GATEWAY,
    cloudevents.SCHEMA_REJECTED: REJECTED,
}
INST = "5f3a9c1e0b7d4a26"


@pytest.mark.parametrize("kind", messages.EVENT_KINDS)
def test_every_device_event_kind_maps_to_a_valid_cloudevent(kind):
    body = messages.event(
        7,
        12,
        kind,
        75,
        time=1764000000,
        det=1,
        lel=0.4000000059604645,
        valve="closed",
        detail="test",
    )
    ce = cloudevents.device_event("site-9", "kitchen-1", INST, body, 1764000001.25)
    EVENT.validate(ce)
    assert ce["id"] == "kitchen-1:5f3a9c1e0b7d4a26:7:12"
    assert ce["data"]["instance"] == INST
    assert ce["source"] == "gasguard://site-9/kitchen-1"
    assert ce["type"] == cloudevents.EVENT_TYPES[kind]
    assert ce["data"]["lel"] == 0.4
    assert ce["time"] == "2025-11-24T16:00:00Z"


def test_event_without_device_time_uses_receive_time():
    body = messages.event(1, 1, "alarm.high", 3)
    ce = cloudevents.device_event("s", "d", INST, body, 1764000001.25)
    EVENT.validate(ce)
    assert ce["time"] == "2025-11-24T16:00:01.250Z"
    assert "device_time" not in ce["data"]


def test_the_same_event_of_two_board_lives_has_two_ids():
    # boot counters start at 1 again after a flash erase or on a replaced board
    body = messages.event(1, 1, "alarm.high", 3)
    a = cloudevents.device_event("s", "d", INST, body, 1764000000)
    b = cloudevents.device_event("s", "d", "00000000deadbeef", body, 1764000000)
    assert a["id"] != b["id"]


@pytest.mark.parametrize(
    ("lel", "why"),
    [
        (float("nan"), "not a number"),
        (float("inf"), "infinite"),
        (float("-inf"), "infinite"),
        (1e308, "out of range (1e+308)"),
        (-(2.0**64), "out of range (-1.84467e+19)"),
        (-(2**64), "out of range (-1.84467e+19)"),
        (200.1, "out of range (200.1)"),
    ],
)
def test_a_reading_no_regulator_can_use_is_flagged_never_null(lel, why):
    body = messages.event(7, 12, "alarm.high", 75, det=0, lel=lel, valve="closed")
    ce = cloudevents.device_event("s", "d", INST, body, 1764000000)
    EVENT.validate(ce)
    assert "lel" not in ce["data"] and ce["data"]["lel_invalid"] == why
    assert ce["type"] == "gasguard.alarm.high"  # the alarm itself still counts


def test_an_over_range_high_alarm_says_so():
    body = messages.event(7, 14, "alarm.high", 75, det=0, lel=120.0, over=True)
    ce = cloudevents.device_event("s", "d", INST, body, 1764000000)
    EVENT.validate(ce)
    assert ce["data"]["over_range"] is True and ce["data"]["lel"] == 120.0
    with pytest.raises(messages.MessageError):
        messages.validate(messages.EVENT, {**body, "over": False})


@pytest.mark.parametrize("t", [0, 946684799, 4102444800, (1 << 40) - 1])
def test_a_device_clock_gone_wrong_is_kept_aside_and_the_event_still_counts(t):
    body = messages.event(7, 12, "alarm.high", 75, time=t)
    ce = cloudevents.device_event("s", "d", INST, body, 1764000001)
    EVENT.validate(ce)
    assert ce["time"] == "2025-11-24T16:00:01Z"
    assert ce["data"]["device_time_invalid"] == t and "device_time" not in ce["data"]


def test_events_lost_carries_the_count():
    body = messages.event(7, 300, "events.lost", 7275, n=12, detail="12 dropped")
    ce = cloudevents.device_event("s", "d", INST, body, 1764000000)
    EVENT.validate(ce)
    assert ce["type"] == "gasguard.events.lost" and ce["data"]["count"] == 12


def test_a_dead_letter_validates_and_carries_the_body():
    raw = bytes.fromhex("a162696482")
    ce = cloudevents.rejected("s", "gw-1", "d", "event schema: data.x", raw, 1764000000, "x:1")
    REJECTED.validate(ce)
    assert bytes.fromhex(ce["data"]["body_hex"]) == raw
    assert cloudevents.topic_rejected("s", "gw-1") == "gasguard/v1/s/gateway/gw-1/rejected"


@pytest.mark.parametrize("kind", sorted(cloudevents.GATEWAY_EVENT_TYPES))
def test_gateway_events_validate(kind):
    ce = cloudevents.gateway_event("s", "d", kind, "d:gw:1", 1764000000, "missed 3 heartbeats")
    EVENT.validate(ce)


def test_state_and_gateway_status_validate():
    state = {
        "online": True,
        "session": "kitchen-1:7",
        "boot": 7,
        "reset_cause": "power",
        "fw": "0.1.0",
        "cfg": "5f3a9c1e",
        "valve_kind": "nc",
        "valve": "open",
        "alarm": "none",
        "uptime_s": 61,
        "heap_free": 61000,
        "pending_events": 0,
        "lost_events": 3,
        "instance": INST,
        "loop": {"period_ms": 50, "mean_us": 1800, "max_us": 4100, "overruns": 0},
        "detectors": [
            {"index": 0, "state": "ok", "lel": 0.4, "errors": 0, "gas": "methane", "address": 1}
        ],
        "last_seen": 1764000000,
    }
    STATE.validate(cloudevents.device_state("s", "kitchen-1", state, 1764000000))
    for online in (True, False):
        GATEWAY.validate(cloudevents.gateway_status("s", "gw-1", online, 1764000000, "0.1.0", 2))
    counts = {"outbox": 7, "refused": 2, "dead_letters": 1}
    ce = cloudevents.gateway_status("s", "gw-1", True, 1764000000, "0.1.0", 2, counts)
    GATEWAY.validate(ce)
    assert {k: ce["data"][k] for k in counts} == counts
    # a count past the schema's bound is sent as the bound ("at least"), never refused
    huge = cloudevents.gateway_status("s", "gw-1", True, 1764000000, "0.1.0", 2**40,
                                      {"outbox": 2**40})  # fmt: skip
    GATEWAY.validate(huge)
    assert huge["data"]["outbox"] == huge["data"]["devices_online"] == cloudevents.COUNT_MAX
    for bad in (-1, 2**32, 1.5, "7", None, True):
        with pytest.raises(jsonschema.ValidationError):
            GATEWAY.validate({**ce, "data": {**ce["data"], "outbox": bad}})


def test_schemas_reject_what_a_regulator_must_not_receive():
    ce = cloudevents.device_event(
        "s", "d", INST, messages.event(1, 1, "alarm.high", 3), 1764000000
    )
    for broken in (
        {k: v for k, v in ce.items() if k != "id"},
        {**ce, "type": "gasguard.valve.opened"},
        {**ce, "source": "gasguard://s/bad/device"},
        {**ce, "data": {k: v for k, v in ce["data"].items() if k != "seq"}},
        {**ce, "data": {k: v for k, v in ce["data"].items() if k != "instance"}},
        {**ce, "data": {**ce["data"], "lel": None}},
        {**ce, "time": "2025-13-45T99:99:99Z"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            EVENT.validate(broken)


def test_example_payload_files_validate():
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) >= 4
    for path in files:
        payload = json.loads(path.read_text())
        BY_SCHEMA[payload.get("dataschema") or payload["schema"]].validate(payload)


def test_the_commissioning_example_record_has_the_fields_the_delivery_relies_on():
    """The record part ($defs/record) by the reference validator, as the gateway and the
    regulator check it apart from its envelope."""
    schema = json.loads((SCHEMAS / "commissioning.schema.json").read_text())
    record = json.loads((EXAMPLES / "commissioning.json").read_text())["data"]["record"]
    jsonschema.Draft202012Validator(schema["$defs"]["record"]).validate(record)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema["$defs"]["record"]).validate(
            dict(record, verdict="OK")
        )


@pytest.mark.parametrize(
    ("mtype", "body", "field"),
    [
        (messages.EVENT, {"id": [1, 2], "kind": "valve.opened", "up": 1}, "kind"),
        (messages.EVENT, {"id": [1], "kind": "ack", "up": 1}, "id"),
        (messages.EVENT, {"id": [1, 2], "kind": "ack", "up": -1}, "up"),
        (messages.EVENT, {"id": [1, 2], "kind": "ack", "up": 1, "open": True}, "open"),
        (messages.COMMAND, {"cmd": "open_valve"}, "cmd"),
        (messages.COMMAND, {"cmd": "identify", "valve": "open"}, "valve"),
        (messages.ACK, {"ids": []}, "ids"),
        (messages.TIME, {"time": 5}, "boot"),
        (messages.TIME, {"time": 5, "boot": 1, "nonce": b"short"}, "nonce"),
        (messages.TIME, {"time": 5, "boot": 1, "gn": "not bytes"}, "gn"),
        (messages.HEARTBEAT, {"up": True}, "up"),
        (messages.BIRTH, {"dev": "d", "inst": "XYZ"}, "inst"),
        (messages.BIRTH, {"dev": "d", "inst": "0123456789ABCDEF"}, "inst"),
        (0x7F, {}, "type"),
    ],
)
def test_invalid_bodies_name_the_field(mtype, body, field):
    with pytest.raises(messages.MessageError) as err:
        messages.validate(mtype, body)
    assert err.value.field == field


def test_rfc3339():
    assert cloudevents.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert cloudevents.rfc3339(951782400) == "2000-02-29T00:00:00Z"
    assert cloudevents.rfc3339(4102444799.999) == "2099-12-31T23:59:59.999Z"


def test_rfc3339_matches_datetime_across_days_in_any_order():
    """The date part is kept from the last call: times from other days, back and forth (a
    device clock a day off, a backlog from yesterday), must still get their own date."""
    import datetime
    import random

    rnd = random.Random(7)
    ts = [rnd.randrange(0, 4102444800) for _ in range(300)] + [86399, 86400, 86399, 0]
    for t in ts:
        want = datetime.datetime.fromtimestamp(t, datetime.UTC)
        assert cloudevents.rfc3339(t) == want.strftime("%Y-%m-%dT%H:%M:%SZ")
