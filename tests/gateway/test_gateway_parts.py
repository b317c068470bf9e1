"""The gateway's parts on their own: config refusals, the SQLite outbox, health, the schemas."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasguard.gateway import config, schemas
from gasguard.gateway.health import Health
from gasguard.gateway.outbox import Item, Outbox
from gasguard.protocol import cloudevents, messages

SCHEMAS = Path(__file__).parents[2] / "protocol" / "schemas"

GOOD = """
[gateway]
site = "site-9"
id = "gw-1"
keys = "keys.toml"

[links.tcp]
port = 7700

[mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def _write(tmp: Path, text: str, keys: str = '[keys]\nkitchen-1 = "%s"\n' % ("ab" * 16)) -> Path:
    (tmp / "keys.toml").write_text(keys)
    p = tmp / "gw.toml"
    p.write_text(text)
    return p


def test_a_good_config_loads_and_hides_its_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv(config.PASSWORD_ENV, "s3cret-pw")
    cfg = config.load(_write(tmp_path, GOOD))
    assert cfg.keys == {"kitchen-1": b"\xab" * 16}
    assert cfg.mqtt.password == "s3cret-pw" and not cfg.mqtt.tls
    assert cfg.offline_after_s == 30
    text = repr(cfg)
    assert "s3cret-pw" not in text and "abab" not in text and "171" not in text


@pytest.mark.parametrize(
    "change,field,reason",
    [
        (('site = "site-9"', 'site = "site 9"'), "gateway.site", "must be 1-32"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "mqtt://broker.example.cn"'), "mqtt.url",
         "plaintext MQTT"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'), "mqtt.url", "must be mqtt://"),
        (("port = 7700", "port = 70000"), "links.tcp.port", "must be 0..65535"),
        (("[links.tcp]\nport = 7700", ""), "links", "no device link"),
        (('id = "gw-1"', 'id = "gw-1"\ncolour = "red"'), "gateway.colour", "unknown setting"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "mqtts://b.example"\ncert_file = "nope.pem"'),
         "mqtt.cert_file", "no such file"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_with_the_field_and_the_reason(tmp_path, change, field, reason):
    with pytest.raises(config.ConfigError) as e:
        config.load(_write(tmp_path, GOOD.replace(*change)))
    assert e.value.field == field
    assert reason in e.value.reason


def test_a_bad_key_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        config.load(_write(tmp_path, GOOD, '[keys]\nkitchen-1 = "zz%s"\n' % ("cd" * 15)))
    assert e.value.field == "keys.kitchen-1" and "cdcd" not in str(e.value)
    with pytest.raises(config.ConfigError, match="16..64 bytes"):
        config.load(_write(tmp_path, GOOD, '[keys]\nkitchen-1 = "abcd"\n'))


def _item(i: int, dev: str = "d1", alarm: bool = False) -> Item:
    return Item("%s:1:%d" % (dev, i), dev, "t/%s" % dev, b"payload %d" % i, alarm)


def test_outbox_keeps_order_dedups_and_survives_reopening(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob.next_boot() == 1
    assert ob.add([_item(1), _item(2), _item(1, "d2")]) == [True, True, True]
    assert ob.add([_item(2), _item(3)]) == [False, True]  # a re-sent event is not queued twice
    rows = ob.fetch(0, 10)
    assert [r.ce_id for r in rows] == ["d1:1:1", "d1:1:2", "d2:1:1", "d1:1:3"]
    ob.delete([rows[0].id, rows[2].id])
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")  # a restart
    assert ob.next_boot() == 2
    assert [r.ce_id for r in ob.fetch(0, 10)] == ["d1:1:2", "d1:1:3"]
    assert ob.depth() == 2
    assert ob.add([_item(1)]) == [False]  # published and deleted, still remembered as seen


def test_outbox_retention_drops_the_oldest_and_says_how_many(tmp_path):
    now = [1000.0]
    ob = Outbox(tmp_path / "o.sqlite", max_events=5, max_age_s=100, clock=lambda: now[0])
    ob.add([_item(i) for i in range(1, 4)])
    now[0] += 150  # these three are now too old
    ob.add([_item(i, "d2") for i in range(1, 8)])
    dropped = ob.enforce_retention()
    assert dropped == {"d1": 3, "d2": 2}
    assert [r.ce_id for r in ob.fetch(0, 10)] == ["d2:1:%d" % i for i in range(3, 8)]


def test_health_sessions_and_offline():
    now = [100.0]
    h = Health("site-9", offline_after_s=30, clock=lambda: now[0])
    dets = [{"addr": 1, "gas": "methane", "profile": "generic-x10"}]
    birth = messages.birth("k1", "0.1.0", "abcd", "wdt", "nc", dets)
    assert "session k1:4 began (reset cause wdt)" in h.birth("k1", 4, birth)
    assert h.birth("k1", 4, birth) is None  # a repeated birth is the same session
    loop = {"period_ms": 20, "mean_us": 1, "max_us": 2, "overruns": 0}
    hb = messages.heartbeat(5, "open", "none", loop, 60000, 0, [{"state": "ok", "errors": 0}])
    assert h.heartbeat("k1", hb) is True
    assert h.heartbeat("k1", hb) is False  # nothing a regulator watches changed
    now[0] += 31
    assert h.expire() == [("k1", "no frame for 31 s; session k1:4 ended")]
    assert h.expire() == []
    assert h.seen("k1") == "frames again (session k1:4)"
    ev = h.state_event("k1")
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / "state.schema.json").read_text())
                                    ).validate(ev)  # fmt: skip
    assert ev["data"]["detectors"][0] == {"index": 0, "state": "ok", "errors": 0,
                                          "gas": "methane", "address": 1}  # fmt: skip


EVENT_REF = jsonschema.Draft202012Validator(
    json.loads((SCHEMAS / "event.schema.json").read_text())
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(messages.EVENT_KINDS),
    dev=st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True),
    lel=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
    detail=st.one_of(st.none(), st.text(max_size=120)),
    seq=st.integers(0, 1 << 32),
)
def test_the_fast_validator_agrees_with_the_reference_one(kind, dev, lel, detail, seq):
    body = {"id": [1, seq], "kind": kind, "up": 5}
    if lel is not None:
        body["lel"] = lel
    if detail is not None:
        body["detail"] = detail
    try:
        ce = cloudevents.device_event("site-9", dev, body, time.time())
    except (ValueError, OverflowError):
        return
    ref_ok = EVENT_REF.is_valid(json.loads(json.dumps(ce)))
    try:
        schemas.check(json.loads(json.dumps(ce)))
        fast_ok = True
    except schemas.SchemaError:
        fast_ok = False
    assert fast_ok == ref_ok
