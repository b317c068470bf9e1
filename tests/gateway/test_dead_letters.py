"""Issue 20 item 9 (and the Build's dead-letter topic): an event the schema refuses was never
acknowledged, so the board re-sent it for ever and nobody upstream learnt of it. Now it is
acknowledged, kept in the outbox and published on gasguard/v1/{site}/gateway/{gw}/rejected with
the reason and the raw body. The gateway in process (so the schema can be made to refuse one
event: nothing a board can send fails it any more), real mosquitto, a board over TCP."""

from __future__ import annotations

import asyncio

import jsonschema

from gasguard.gateway import config as gwconfig
from gasguard.gateway import events, schemas
from gasguard.gateway.service import Gateway
from gasguard.protocol import cbor, cloudevents
from gasguard.tools.sim.gwrun import write_config
from gasguard.tools.sim.syndevice import SynDevice, open_link

from .conftest import KEYS, Collector

REJECTED = jsonschema.Draft202012Validator(schemas.load("rejected.schema.json"))


def test_an_event_the_schema_refuses_is_acked_kept_and_dead_lettered(
    mosquitto, tmp_path, monkeypatch
):
    real = schemas.check

    def strict(payload):
        if payload.get("data", {}).get("lel") == 42.0:
            raise schemas.SchemaError("data.lel", "refused for this test")
        return real(payload)

    monkeypatch.setattr(events.schemas, "check", strict)
    cfg = gwconfig.load(
        write_config(tmp_path, KEYS, mosquitto.url, site="site-9", status_every_s=1)
    )
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

    async def scenario():
        gw = Gateway(cfg)
        await gw.start()
        try:
            async with Collector(mosquitto.port) as col:
                r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
                eid, f = dev.event("alarm.high", det=0, lel=42.0)
                w.write(f)
                w.write(dev.event("alarm.clear", det=0, lel=1.0)[1])

                async def acked():
                    while len(dev.acked) < 2:
                        dev.feed(await r.read(65536))

                await asyncio.wait_for(acked(), 10)
                await col.wait(lambda: any(t.endswith("/rejected") for t, _, _ in col.messages))
                await col.wait(lambda: any(p["type"] == "gasguard.alarm.clear"
                                           for p in col.events()))  # fmt: skip
                # the retained status counts it, at its next look (once a second here)
                await col.wait(lambda: any(t.endswith("/status") and p["data"]["dead_letters"]
                                           for t, p, _ in col.messages), 5)  # fmt: skip
                w.close()
                return eid, col.messages, gw.status()
        finally:
            await gw.stop()

    eid, msgs, st = asyncio.run(scenario())
    topic, letter, _ = next(m for m in msgs if m[0].endswith("/rejected"))
    assert topic == cloudevents.topic_rejected("site-9", "gw-1")
    REJECTED.validate(letter)
    d = letter["data"]
    assert d["device"] == "kitchen-1" and "refused for this test" in d["reason"]
    body = cbor.loads(bytes.fromhex(d["body_hex"]))
    assert body["kind"] == "alarm.high" and body["id"] == list(eid)
    assert letter["id"] == cloudevents.event_id("kitchen-1", dev.inst, *eid) + ":rejected"
    assert dev.unacked == {}  # the board moved on
    assert st["frames"]["rejected"] == 1 and st["outbox"]["depth"] == 0
    assert st["events"]["dead_letters"] == 1
    assert [p for t, p, _ in msgs if t.endswith("/status")][-1]["data"]["dead_letters"] == 1
