"""The regulator's end on a real stream: a device's events go through the real gateway to
mosquitto (MQTT 5), `gasguard regulator ingest` stores them, and `regulator watch` and `regulator
export` read the store: each incident through its lifecycle. A duplicate delivery is stored once;
a payload that breaks the schema is rejected with its field and never reaches the ledger."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from gasguard.tools.sim.syndevice import SynDevice, run_tcp

from .conftest import KEYS

INCIDENT_1 = ("alarm.high", "valve.closed", "ack", "reset.refused", "alarm.clear", "reset")
INCIDENT_2 = ("alarm.low", "alarm.clear")  # a low alarm that never closed the valve
INCIDENT_3 = ("alarm.high", "valve.closed")  # still open when the ledger is read


def gasguard(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gasguard.tools.cli", *argv],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def query(db: Path, sql: str, params=()) -> list:
    c = sqlite3.connect(db)
    try:
        return c.execute(sql, params).fetchall()
    finally:
        c.close()


def wait_for(db: Path, sql: str, pred, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    got: list = []
    while time.monotonic() < deadline:
        try:
            got = query(db, sql)
        except sqlite3.OperationalError:  # the ingest has not made its tables yet
            got = []
        if pred(got):
            return got
        time.sleep(0.1)
    raise AssertionError("timed out: %r" % (got[-5:],))


def test_the_store_follows_each_incident_through_its_lifecycle(tmp_path: Path, mosquitto,
                                                                gateways):  # fmt: skip
    gw = gateways.start(gateways.config(mosquitto, protocol="5"))
    db = tmp_path / "regulator.db"
    log = tmp_path / "ingest.log"
    with open(log, "w") as out:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "gasguard.regulator", "ingest", "--broker", mosquitto.url,
             "--db", str(db), "--group", "gw-test-%d" % os.getpid()],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while ": subscribed as " not in log.read_text():
            assert ingest.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
        kinds = INCIDENT_1 + INCIDENT_2 + INCIDENT_3
        asyncio.run(run_tcp(dev, "127.0.0.1", gw.tcp_port, len(kinds), kinds=kinds))
        wait_for(db, "SELECT count(*) FROM events", lambda r: r[0][0] == 1 + len(kinds))

        # the same event delivered twice (a publish retried after a lost PUBACK), and a payload
        # a broken or hostile publisher sent: neither may change the ledger
        async def inject() -> None:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
                topic = "gasguard/v1/site-9/kitchen-1/events"
                ((raw,),) = query(db, "SELECT payload FROM events WHERE id = ?",
                                  ("kitchen-1:%s:1:1" % dev.inst,))  # fmt: skip
                dup = json.loads(raw)
                await c.publish(topic, json.dumps(dup), qos=1)
                bad = dict(dup, id="kitchen-1:%s:1:999" % dev.inst)
                bad["data"] = dict(dup["data"], lel=5000)
                await c.publish(topic, json.dumps(bad), qos=1)

        asyncio.run(inject())
        ((reason,),) = wait_for(db, "SELECT reason FROM rejected", lambda r: len(r) == 1)
        assert "data.lel" in reason, reason
        # the console reads the store: what it shows, once, as JSON
        r = gasguard("regulator", "watch", "--db", str(db), "--once", "--json")
        assert r.returncode == 0, r.stderr
        snap = json.loads(r.stdout)
    finally:
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(20) == 0, log.read_text()
    assert query(db, "SELECT count(*) FROM events")[0][0] == 1 + len(kinds)  # the dup: once
    t = snap["totals"]
    assert t["rejected"]["messages"] == 1 and t["devices"] == 1 and t["online"] == 1, t
    assert t["open_incidents"] == {"high": 1, "low": 0} and t["gateways"] == 1
    (open_,) = snap["incidents"]
    assert open_["stage"] == "opened" and open_["valve_closed_at"]

    out = tmp_path / "incidents.csv"
    r = gasguard("regulator", "incidents", "--db", str(db), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(x["incident"], x["level"], x["stage"]) for x in rows] == [
        ("1", "high", "closed"),
        ("2", "low", "closed"),
        ("3", "high", "opened"),
    ]
    one, two, three = rows
    # incident 1: every step on site, in order, with its duration from the opening alarm
    assert one["site"] == "site-9" and one["device"] == "kitchen-1"
    steps = ["opened_at", "valve_closed_at", "acknowledged_at", "cleared_at", "reset_at"]
    times = [one[s] for s in steps]
    assert all(times) and times == sorted(times), one
    assert one["closed_at"] == one["reset_at"]
    assert 0 <= float(one["to_acknowledged_s"]) <= float(one["duration_s"])
    # incident 2: the valve never closed, so the clear ends it
    assert two["valve_closed_at"] == "" and two["closed_at"] == two["cleared_at"] != ""
    # incident 3: open, valve closed, nobody has acted yet
    assert three["valve_closed_at"] and not three["acknowledged_at"] and not three["closed_at"]
