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
BY_SCHEMA = {
    cloudevents.SCHEMA_EVENT: EVENT,
    cloudevents.SCHEMA_STATE: STATE,
    cloudevents.SCHEMA_GATEWAY: GATEWAY,
}


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
    ce = cloudevents.device_event("site-9", "kitchen-1", body, 1764000001.25)
    EVENT.validate(ce)
    assert ce["id"] == "kitchen-1:7:12"
    assert ce["source"] == "gasguard://site-9/kitchen-1"
    assert ce["type"] == cloudevents.EVENT_TYPES[kind]
    assert ce["data"]["lel"] == 0.4
    assert ce["time"] == "2025-11-24T16:00:00Z"


def test_event_without_device_time_uses_receive_time():
    body = messages.event(1, 1, "alarm.high", 3)
    ce = cloudevents.device_event("s", "d", body, 1764000001.25)
    EVENT.validate(ce)
    assert ce["time"] == "2025-11-24T16:00:01.250Z"
    assert "device_time" not in ce["data"]


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
        "loop": {"period_ms": 50, "mean_us": 1800, "max_us": 4100, "overruns": 0},
        "detectors": [
            {"index": 0, "state": "ok", "lel": 0.4, "errors": 0, "gas": "methane", "address": 1}
        ],
        "last_seen": 1764000000,
    }
    STATE.validate(cloudevents.device_state("s", "kitchen-1", state, 1764000000))
    for online in (True, False):
        GATEWAY.validate(cloudevents.gateway_status("s", "gw-1", online, 1764000000, "0.1.0", 2))


def test_schemas_reject_what_a_regulator_must_not_receive():
    ce = cloudevents.device_event("s", "d", messages.event(1, 1, "alarm.high", 3), 1764000000)
    for broken in (
        {k: v for k, v in ce.items() if k != "id"},
        {**ce, "type": "gasguard.valve.opened"},
        {**ce, "source": "gasguard://s/bad/device"},
        {**ce, "data": {k: v for k, v in ce["data"].items() if k != "seq"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            EVENT.validate(broken)


def test_example_payload_files_validate():
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) >= 4
    for path in files:
        payload = json.loads(path.read_text())
        BY_SCHEMA[payload["dataschema"]].validate(payload)


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
        (messages.HEARTBEAT, {"up": True}, "up"),
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
