"""Every rogue message the issue names is refused at the border with a reason, never raised."""

from __future__ import annotations

import json

import pytest

from gasguard.protocol import cloudevents, strictjson
from gasguard.regulator import boundary

from .conftest import board_event


def _event(**change) -> tuple[str, dict]:
    topic, raw = board_event("site-1", "kitchen-1", "alarm.high", 1, 5, lel=62.5)
    ce = json.loads(raw)
    for k, v in change.items():
        if k.startswith("data_"):
            ce["data"][k[5:]] = v
        else:
            ce[k] = v
    return topic, ce


def _refused(topic: str, raw: bytes | str) -> str:
    if isinstance(raw, str):
        raw = raw.encode()
    with pytest.raises(boundary.Refused) as e:
        boundary.check(topic, raw)
    return str(e.value)


def test_a_good_event_passes_with_its_times_spelled_one_way():
    topic, raw = board_event("site-1", "kitchen-1", "alarm.high", 1, 5, lel=62.5)
    m = boundary.check(topic, raw)
    assert (m.kind, m.site, m.subject) == ("events", "site-1", "kitchen-1")
    assert m.payload["time"].endswith(".000Z")
    assert m.text == raw.decode()


def test_deeply_nested_json_is_refused_without_recursion():
    topic, _ = _event()
    # under the size cap, and far deeper than json.loads can recurse (about 1,000)
    for bomb in ("[" * 16_000 + "]" * 16_000, '{"a":' * 5_000 + "1" + "}" * 5_000):
        assert "nested deeper" in _refused(topic, bomb)


def test_nesting_inside_strings_does_not_count():
    assert strictjson.nesting_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[\\"[[["}', 8) == 1


def test_dataschema_list_is_refused_by_the_topics_schema():
    topic, ce = _event(dataschema=[])
    assert "dataschema" in _refused(topic, json.dumps(ce))


def test_state_payload_on_an_events_topic_is_refused():
    st = cloudevents.device_state(
        "site-1", "kitchen-1", {"online": True, "last_seen": 1_760_000_000}, 1_760_000_000
    )
    reason = _refused(cloudevents.topic_events("site-1", "kitchen-1"), json.dumps(st))
    assert reason.startswith("schema:")


def test_a_time_matching_the_pattern_but_not_a_date_is_refused():
    topic, ce = _event(time="2025-13-45T99:99:99Z")  # the (today's pattern refuses it)
    assert "time" in _refused(topic, json.dumps(ce))
    for day in ("2025-02-30", "2025-04-31"):  # the pattern admits these: only a calendar can't
        topic, ce = _event(time=day + "T10:00:00Z")
        assert "time: '%sT10:00:00Z' is not a real UTC date" % day in _refused(
            topic, json.dumps(ce)
        )
    topic, ce = _event(data_received="2025-02-29T10:00:00Z")  # 2025 is no leap year
    assert "data.received" in _refused(topic, json.dumps(ce))


def test_topic_device_must_match_the_payload():
    _, ce = _event()
    reason = _refused(cloudevents.topic_events("site-1", "kitchen-2"), json.dumps(ce))
    assert "data.device" in reason
    reason = _refused(cloudevents.topic_events("site-2", "kitchen-1"), json.dumps(ce))
    assert "data.site" in reason


def test_source_must_match_the_topic():
    topic, ce = _event(source="gasguard://site-1/kitchen-9")
    assert "source" in _refused(topic, json.dumps(ce))


def test_an_id_that_is_not_the_boards_own_is_refused():
    """A forged id could claim (and so shadow) another event's id."""
    topic, ce = _event(id="kitchen-1:%s:1:4" % "00000000000000a1")
    assert _refused(topic, json.dumps(ce)).startswith("id:")


def test_type_must_match_kind():
    topic, ce = _event(type="gasguard.alarm.low")
    assert _refused(topic, json.dumps(ce)).startswith("type:")


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"x" * (boundary.MAX_BYTES + 1), "size"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"id": "a", "id": "b"}', "twice"),
        (b"{", "json"),
        (b"", "json"),
    ],
)
def test_malformed_payloads_are_refused(raw, why):
    topic, _ = _event()
    assert why in _refused(topic, raw)


def test_foreign_topics_are_refused():
    _, ce = _event()
    assert _refused("gasguard/v1/site-1/kitchen-1/other", json.dumps(ce)).startswith("topic")


def _gateway_event(device: str, kind: str, ce_id: str) -> tuple[str, bytes]:
    ce = cloudevents.gateway_event("site-1", device, kind, ce_id, 1_760_000_000, "heard again")
    return cloudevents.topic_events("site-1", device), json.dumps(ce).encode()


@pytest.mark.parametrize(
    "ce_id",
    [
        "kitchen-1:0123456789abcdef:1:5",  # a board's id: would take the alarm's place
        "kitchen-2:online:0123456789abcdef:1:5",  # another device's
        "kitchen-1:offline:0123456789abcdef:1:5",  # another kind's
        "kitchen-1:online:0123456789ABCDEF:1:5",
        "kitchen-1:online:0123456789abcdef:1:5:6",
        "kitchen-1:online:0123456789abcdef:1:-5",
        "kitchen-1:online:0123456789abcdef:1:" + "9" * 21,
        "kitchen-1:online:0123456789abcdef:١:5",  # an Arabic-Indic digit is isdigit() too
    ],
)
def test_a_gateway_event_whose_id_is_not_the_gateways_form_is_refused(ce_id):
    """The gateway's own events have ids of their own form (gateway/service.py): one in any
    other form could take the id of an event the board has yet to send."""
    assert "id:" in _refused(*_gateway_event("kitchen-1", "device.online", ce_id))


def test_a_gateway_event_in_the_gateways_form_passes():
    m = boundary.check(*_gateway_event(
        "kitchen-1", "device.online", "kitchen-1:online:0123456789abcdef:3:1760000000123456"))
    assert m.payload["data"]["kind"] == "device.online"


@pytest.mark.parametrize("ahead_s, kept", [(60, True), (3600, False), (30 * 365 * 86400, False)])
def test_a_time_in_the_future_is_stored_as_the_time_it_arrived(ahead_s, kept):
    """A board or gateway clock set ahead would hold the device "last seen" and push every
    deadline out; a minute's skew is kept, more becomes the arrival time (the message as it
    came keeps the claim)."""
    now = 1_760_000_000.0
    topic, raw = board_event("site-1", "kitchen-1", "alarm.high", 1, 5, t=int(now + ahead_s))
    m = boundary.check(topic, raw, now=now)
    stored = boundary.calendar_time(m.payload["time"], "time").timestamp()
    received = boundary.calendar_time(m.payload["data"]["received"], "received").timestamp()
    assert stored == (now + ahead_s if kept else now)
    assert received <= now + boundary.FUTURE_SLACK_S
    assert m.text == raw.decode()  # the claim, as it came, is kept as evidence


@pytest.mark.parametrize("ahead_s", [60, 3600])
def test_retained_state_from_the_future_says_nothing_of_when_the_device_was_seen(ahead_s):
    """Retained state comes again at every subscribe: were its future last_seen made the
    arrival time, each ingest restart would make a dead device look just heard."""
    now = 1_760_000_000.0
    st = cloudevents.device_state("site-1", "kitchen-1",
                                  {"online": True, "last_seen": now + ahead_s}, now + ahead_s)
    for later in (now, now + 1800, now + 7200):  # delivered again at each ingest restart
        s = boundary.check(cloudevents.topic_state("site-1", "kitchen-1"),
                           json.dumps(st).encode(), now=later)  # fmt: skip
        believable = now + ahead_s <= later + boundary.FUTURE_SLACK_S
        claim = boundary.canonical_time(cloudevents.rfc3339(now + ahead_s), "t")
        assert s.payload["data"]["last_seen"] == (claim if believable else None)
        assert s.payload["time"] == (claim if believable else None)


def test_a_board_clock_not_yet_set_takes_the_gateways_time():
    """A re-flashed board alarms before it is given the time (its clock at 2000-01-01): filed
    in 2000, its hazard would be 26 years overdue and its tamper report outside every window."""
    now = 1_760_000_000.0
    ce = json.loads(board_event("site-1", "kitchen-1", "alarm.high", 1, 5, t=946_684_800)[1])
    ce["data"]["received"] = cloudevents.rfc3339(now - 2)
    m = boundary.check("gasguard/v1/site-1/kitchen-1/events", json.dumps(ce).encode(), now=now)
    assert m.payload["time"] == boundary.canonical_time(cloudevents.rfc3339(now - 2), "t")
    assert m.payload["data"]["device_time"].startswith("2000-01-01")  # the claim, kept


def _status(online: bool = True, t: float = 1_760_000_000.0, devices: int = 3,
            **counts) -> tuple[str, dict]:  # fmt: skip
    ce = cloudevents.gateway_status("site-1", "gw-1", online, t, "0.9.0", devices, counts)
    return cloudevents.topic_gateway_status("site-1", "gw-1"), ce


def test_a_gateway_status_with_its_counts_or_without_them_passes():
    """An older gateway's status has no counts; a newer one's carries them as integers."""
    now = 1_760_000_100.0
    topic, old = _status()
    assert "outbox" not in boundary.check(topic, json.dumps(old).encode(), now=now).payload["data"]
    topic, new = _status(outbox=2**32 - 1, refused=0, dead_letters=7)
    d = boundary.check(topic, json.dumps(new).encode(), now=now).payload["data"]
    assert (d["outbox"], d["refused"], d["dead_letters"]) == (2**32 - 1, 0, 7)


@pytest.mark.parametrize("field", ["outbox", "refused", "dead_letters", "devices_online"])
@pytest.mark.parametrize(
    "value", [-1, 2**32, 10**30, 1.5, 7.0, 1e300, "7", None, True, [7], {"n": 7}]
)
def test_hostile_gateway_counts_are_refused_naming_the_field(field, value):
    """Negative, past the bound, fractional or integral floats, strings, null, booleans and
    containers: each a refusal into `rejected`, never a crash nor a float in a BIGINT."""
    topic, ce = _status(outbox=1, refused=1, dead_letters=1)
    ce["data"][field] = value
    assert field in _refused(topic, json.dumps(ce))


def test_a_gateway_status_from_the_future_says_nothing_of_when_it_was_seen():
    """Retained like a device's state, so sent again at every ingest restart: a time ahead of
    the ingest's clock becomes unknown, or each restart would make a dead gateway look heard."""
    now = 1_760_000_000.0
    topic, ce = _status(t=now + 3600, outbox=4)
    assert boundary.check(topic, json.dumps(ce).encode(), now=now).payload["time"] is None
    topic, ce = _status(t=now - 60)
    assert boundary.check(topic, json.dumps(ce).encode(), now=now).payload["time"] is not None


def test_the_site_of_a_refused_messages_topic():
    assert boundary.topic_site("gasguard/v1/site-1/gateway/gw-1/status") == "site-1"
    assert boundary.topic_site("gasguard/v1/site-1/kitchen-1/events") == "site-1"
    for topic in ("gasguard/v1/site-1", "gasguard/v2/site-1/x/events", "gasguard/v1/a b/x/y",
                  "gasguard/v1/%s/x/events" % ("s" * 33), "(overflow)"):  # fmt: skip
        assert boundary.topic_site(topic) is None
