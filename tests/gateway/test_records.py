"""Commissioning records through the gateway (issue 26): `gasguard gateway record add` on the
site box, the gateway process publishing each device's newest record retained, QoS 1, on its
device's topic, through restarts and a broker that was away. Refusals at the gateway's border
are what the installer sees: exit 2 and one line naming why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from gasguard.gateway import recordcheck
from gasguard.gateway.status import render
from gasguard.protocol import cloudevents
from gasguard.protocol import record as rec
from tests.commissioning import Installer, signed, unsigned

SITE = "site-9"


def add(config: Path, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.gateway", "record", "add", str(path), "--config",
         str(config), *extra], capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def write(tmp: Path, record, name: str = "commissioning-kitchen-1.json") -> Path:
    p = tmp / name
    p.write_bytes(record if isinstance(record, bytes) else json.dumps(record, ensure_ascii=False,
                                                                      indent=2).encode())
    return p


def retained(port: int, topic: str, timeout: float = 15.0) -> dict | None:
    """What a new subscriber gets on topic: the retained message (None if nothing comes)."""
    got: list[bytes] = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(m.payload) if m.retain else None
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return json.loads(got[-1]) if got else None


def wait_retained(port: int, topic: str, pred, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = retained(port, topic, 1.0)
        if last is not None and pred(last):
            return last
    raise AssertionError("retained on %s never matched; last: %s" % (topic, str(last)[:300]))


def test_a_record_added_on_the_site_box_reaches_its_retained_topic_and_a_newer_replaces_it(
    mosquitto, gateways, tmp_path
):
    who = Installer()
    cfg = gateways.config(mosquitto)
    gw = gateways.start(cfg)
    first = signed(SITE, "kitchen-1", who, finished="2026-11-30T10:20:00Z")
    r = add(cfg, write(tmp_path, first))
    assert r.returncode == 0, r.stderr
    assert "added for kitchen-1" in r.stdout
    topic = cloudevents.topic_commissioning(SITE, "kitchen-1")
    got = wait_retained(mosquitto.port, topic, lambda p: True)
    assert got["type"] == "gasguard.commissioning.record"
    assert got["data"]["record"] == first  # the record as signed: it still verifies
    assert rec.verify(got["data"]["record"], who.public_raw) == got["data"]["digest"]
    # the same file again: nothing new; an older one: refused, the newer stays retained
    again = add(cfg, write(tmp_path, first))
    assert again.returncode == 0 and "already held" in again.stdout
    newer = signed(SITE, "kitchen-1", who, finished="2026-11-30T12:00:00Z", close_ms=2100)
    assert add(cfg, write(tmp_path, newer, "newer.json")).returncode == 0
    wait_retained(mosquitto.port, topic, lambda p: p["data"]["record"] == newer)
    older = signed(SITE, "kitchen-1", who, finished="2026-11-29T09:00:00Z")
    r = add(cfg, write(tmp_path, older, "older.json"))
    assert r.returncode == 2 and "only a newer record replaces it" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    time.sleep(2)  # a poll or two of the gateway: still the newer one
    assert retained(mosquitto.port, topic)["data"]["record"] == newer
    st = gw.status()
    assert st["records"]["held"] == ["kitchen-1"]
    assert "commissioning records for kitchen-1" in render(st)


def test_a_record_added_while_the_broker_and_gateway_are_down_is_delivered_after_both_return(
    mosquitto, gateways, tmp_path
):
    who = Installer()
    cfg = gateways.config(mosquitto)
    gw = gateways.start(cfg)
    gw.kill()
    mosquitto.stop()
    record = signed(SITE, "kitchen-2", who)
    r = add(cfg, write(tmp_path, record))  # durable on the site box with nothing running
    assert r.returncode == 0, r.stderr
    listed = subprocess.run([sys.executable, "-m", "gasguard.gateway", "record", "list",
                             "--config", str(cfg)], capture_output=True, text=True)  # fmt: skip
    assert "kitchen-2" in listed.stdout and "waiting for the broker" in listed.stdout
    gateways.start(cfg)
    time.sleep(1.5)
    mosquitto.start()
    topic = cloudevents.topic_commissioning(SITE, "kitchen-2")
    got = wait_retained(mosquitto.port, topic, lambda p: True, timeout=30)
    assert got["data"]["record"] == record
    deadline = time.monotonic() + 10
    while "delivered" not in subprocess.run(
        [sys.executable, "-m", "gasguard.gateway", "record", "list", "--config", str(cfg)],
        capture_output=True, text=True,
    ).stdout:  # fmt: skip
        assert time.monotonic() < deadline, "never marked delivered"
        time.sleep(0.3)


def test_the_gateway_refuses_at_its_border_what_it_must_not_carry(mosquitto, gateways, tmp_path):
    who = Installer()
    cfg = gateways.config(mosquitto)
    good = signed(SITE, "kitchen-1", who)
    ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    bad_sig = dict(good, signature=dict(good["signature"], alg="rsa"))
    short_key = dict(good, signature=dict(good["signature"], public_key="AAAA"))
    not_b64 = dict(good, signature=dict(good["signature"], public_key="@@not base64@@"))
    other_id = dict(good, signature=dict(good["signature"], key_id="0" * 16))
    cases = {
        "unsigned": (unsigned(SITE, "kitchen-1", who), "unsigned"),
        "wrong alg": (bad_sig, "algorithm"),
        "short key": (short_key, "3 bytes, not 32"),
        "bad base64": (not_b64, "not base64"),
        "key id": (other_id, "key_id does not match"),
        "other device": (signed(SITE, "kitchen-99", who), "does not serve"),
        "other site": (signed("site-1", "kitchen-1", who), "serves site 'site-9'"),
        "a float": (dict(unsigned(SITE, "kitchen-1", who), peak=1.5), "a float"),
        # orjson cannot write it (the gateway's publisher): "added", then never delivered
        "big integer": (dict(good, peak=2**64), "beyond 2^53"),
        # a finish time no calendar has (the pattern admits it) was a traceback; one years
        # ahead was held as the newest, and refused every real record for the device after it
        "no such day": (signed(SITE, "kitchen-1", who, finished="2026-02-30T10:00:00Z"),
                        "not a real"),
        "years ahead": (signed(SITE, "kitchen-1", who, finished="2099-01-01T00:00:00Z"),
                        "in the future"),
        # the regulator refuses it (5 min ahead at most) and judges it again only when the
        # gateway sends it again, at its next connect: weeks of "refused" for a good record
        "an hour ahead": (signed(SITE, "kitchen-1", who, finished=ahead), "in the future"),
        "schema": (signed(SITE, "kitchen-1", who, verdict="GOOD"), "record.verdict"),
        "a list": (b"[1, 2]", "a JSON object is expected"),
        "NaN": (b'{"a": NaN}', "NaN is not JSON"),
        "duplicate": (b'{"a": 1, "a": 2}', "appears twice"),
        "not JSON": (b"\x89PNG\r\n", "not"),
        "deep": (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        # within the gateway's old cap (24), past the regulator's for the envelope (16): carried
        # and then never on its unit's page (the ingest's `rejected`, not a refused record)
        "deep for the regulator": (dict(good, unit=json.loads('{"a":' * 18 + "1" + "}" * 18)),
                                   "nested deeper"),
        "huge": (b'{"a": "' + b"x" * (recordcheck.MAX_FILE + 10) + b'"}', "more than a record"),
    }
    for name, (doc, why) in cases.items():
        r = add(cfg, write(tmp_path, doc, "case.json"))
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert why in r.stderr, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
    r = add(cfg, tmp_path / "missing.json")
    assert r.returncode == 2 and "missing.json" in r.stderr
    listed = subprocess.run([sys.executable, "-m", "gasguard.gateway", "record", "list",
                             "--config", str(cfg), "--json"],
                            capture_output=True, text=True)  # fmt: skip
    assert json.loads(listed.stdout) == []  # nothing refused was kept


def test_a_held_record_the_gateway_cannot_publish_stops_no_other_devices_record(
    mosquitto, gateways, tmp_path
):
    """A row held from before the border refused it (a whole number past 64 bits: orjson will
    not write it) must not end the records task and, with it, every later device's delivery."""
    from gasguard.gateway.records import Records

    who = Installer()
    cfg = gateways.config(mosquitto)
    state = cfg.parent / "var"
    state.mkdir(parents=True, exist_ok=True)
    bad = dict(signed(SITE, "kitchen-1", who), peak=2**64)
    held = Records(state)
    held.add(recordcheck.Checked(bad, "ab" * 32, "kitchen-1", bad["record_id"],
                                 bad["finished_at"], who.key_id), json.dumps(bad))  # fmt: skip
    held.close()
    gw = gateways.start(cfg)
    good = signed(SITE, "kitchen-2", who)
    assert add(cfg, write(tmp_path, good)).returncode == 0
    topic = cloudevents.topic_commissioning(SITE, "kitchen-2")
    assert wait_retained(mosquitto.port, topic, lambda p: True)["data"]["record"] == good
    assert gw.status()["records"]["held"] == ["kitchen-2"]

def test_a_damaged_records_file_does_not_keep_the_gateway_from_relaying_alarms(
    mosquitto, gateways, tmp_path
):
    """records.sqlite is the commissioning paperwork, not the alarm path: a file a power cut
    damaged is moved aside (as a damaged outbox is) and the gateway starts, rather than exit 73
    and relay no alarm until someone finds why."""
    cfg = gateways.config(mosquitto)
    state = cfg.parent / "var"
    state.mkdir(parents=True, exist_ok=True)
    (state / "records.sqlite").write_bytes(b"not a database " * 512)
    gateways.start(cfg)
    assert [p.name for p in state.glob("records.sqlite.damaged-*")]
    record = signed(SITE, "kitchen-1", Installer())
    assert add(cfg, write(tmp_path, record)).returncode == 0
    topic = cloudevents.topic_commissioning(SITE, "kitchen-1")
    assert wait_retained(mosquitto.port, topic, lambda p: True)["data"]["record"] == record

def test_records_file_damaged_while_running_does_not_stop_the_gateway(mosquitto, gateways,
                                                                      tmp_path):  # fmt: skip
    """The records task failing at every poll (its file overwritten in place) was 5 failures in
    a minute: exit 70, the whole gateway down, again and again, for the paperwork."""
    cfg = gateways.config(mosquitto)
    gw = gateways.start(cfg)
    assert add(cfg, write(tmp_path, signed(SITE, "kitchen-1", Installer()))).returncode == 0
    for path in (cfg.parent / "var").glob("records.sqlite*"):
        with path.open("r+b") as f:  # in place: the gateway's open connection reads it
            f.write(b"\xff" * max(path.stat().st_size, 4096))
    time.sleep(12)
    assert gw.proc.poll() is None, gw.log_path.read_text()[-600:]
    assert gw.status()["records"] is not None

def test_a_record_added_after_the_records_file_was_deleted_under_the_gateway_is_delivered(
    mosquitto, gateways, tmp_path
):
    """`rm records.sqlite*` (a clean-up) while the gateway runs: `record add` makes a new file
    and says the running gateway delivers it, which read the deleted one until its restart."""
    cfg = gateways.config(mosquitto)
    gateways.start(cfg)
    who = Installer()
    assert add(cfg, write(tmp_path, signed(SITE, "kitchen-1", who))).returncode == 0
    topic = cloudevents.topic_commissioning(SITE, "kitchen-1")
    wait_retained(mosquitto.port, topic, lambda p: True)
    for p in (cfg.parent / "var").glob("records.sqlite*"):
        p.unlink()
    record = signed(SITE, "kitchen-1", who, finished="2026-11-30T11:00:00Z")  # row 1 again
    assert add(cfg, write(tmp_path, record, "again.json")).returncode == 0
    wait_retained(mosquitto.port, topic, lambda p: p["data"]["record"] == record)

def test_a_full_disk_at_record_add_is_one_line_and_nothing_added(mosquitto, gateways, tmp_path):
    """The commit failing (the state directory's disk full: here a file size limit) was a
    traceback; the installer needs one line saying the record was not added, and why."""
    import resource

    cfg = gateways.config(mosquitto)
    assert add(cfg, write(tmp_path, signed(SITE, "kitchen-1", Installer()))).returncode == 0
    big = write(tmp_path, signed(SITE, "kitchen-2", Installer(), unit={"note": "x" * 200_000}),
                "big.json")  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.gateway", "record", "add", str(big), "--config",
         str(cfg)], capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)),
    )  # fmt: skip
    assert r.returncode == 1 and "not added" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    listed = subprocess.run([sys.executable, "-m", "gasguard.gateway", "record", "list",
                             "--config", str(cfg), "--json"], capture_output=True, text=True)
    assert [x["device"] for x in json.loads(listed.stdout)] == ["kitchen-1"]

@pytest.mark.skipif(os.geteuid() != 0, reason="needs to give the state directory away")
def test_a_record_added_by_another_user_than_the_gateways_is_refused(mosquitto, gateways,
                                                                     tmp_path):  # fmt: skip
    cfg = gateways.config(mosquitto)
    state = cfg.parent / "var"
    state.mkdir(parents=True, exist_ok=True)
    os.chown(state, 65534, 65534)  # the gateway's service account, say
    r = add(cfg, write(tmp_path, signed(SITE, "kitchen-1", Installer())))
    assert r.returncode == 2 and "run it as the gateway's user" in r.stderr
    assert not (state / "records.sqlite").exists()


@pytest.mark.parametrize("bom", [False, True])
def test_an_editor_written_record_with_a_bom_and_indentation_is_carried(tmp_path, bom):
    who = Installer()
    good = signed(SITE, "kitchen-1", who)
    raw = json.dumps(good, ensure_ascii=False, indent=4).encode()
    c = recordcheck.check(b"\xef\xbb\xbf" + raw if bom else raw, SITE, {"kitchen-1"})
    assert c.digest == rec.digest(good) and c.key_id == who.key_id


def test_a_record_the_broker_refuses_holds_up_no_alarm_and_goes_once_the_acl_is_mended(
    gateways, tmp_path
):
    """An ACL without the commissioning topic (an operator's file from before issue 26): the
    record is held and tried again, the board's alarms go meanwhile, and it goes when the ACL
    is mended, without another `record add`."""
    import asyncio
    import signal

    import aiomqtt

    from gasguard.tools.sim.syndevice import SynDevice, run_tcp

    from .conftest import KEYS, Collector, until
    from .test_broker_refusals import EVERYTHING, acl_broker

    broker, acl = acl_broker(tmp_path, "topic readwrite gasguard/v1/site-9/+/events\n"
                             "topic readwrite gasguard/v1/site-9/+/state\n")  # fmt: skip
    topic = cloudevents.topic_commissioning(SITE, "kitchen-1")
    with broker:
        cfg = gateways.config(broker, protocol="5")
        gw = gateways.start(cfg)
        record = signed(SITE, "kitchen-1", Installer())
        assert add(cfg, write(tmp_path, record)).returncode == 0

        async def scenario():
            async with Collector(broker.port, aiomqtt.ProtocolVersion.V5) as col:
                await until(lambda: topic in gw.status()["broker"]["refused_topics"], 10)
                dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
                await run_tcp(dev, "127.0.0.1", gw.tcp_port, 3, kinds=("alarm.high",))
                alarms = await until(lambda: sum(p["type"] == "gasguard.alarm.high"
                                                 for p in col.events()) >= 3, 10)  # fmt: skip
                held = gw.status()
                acl.write_text(EVERYTHING)
                broker.proc.send_signal(signal.SIGHUP)
                went = await until(lambda: any(t == topic for t, _, _ in col.messages), 60)
                return alarms, held, went, col

        alarms, held, went, col = asyncio.run(scenario())
    assert alarms, "the board's alarms waited behind the refused record"
    assert topic in held["broker"]["refused_topics"] and held["records"]["published"] == 0
    assert went, "the record never went after the ACL was mended"
    (payload,) = {json.dumps(p) for t, p, _ in col.messages if t == topic}
    assert json.loads(payload)["data"]["record"] == record
