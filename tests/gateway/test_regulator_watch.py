"""`gasguard regulator watch` on a real broker stream: a device's events go through the real
gateway to mosquitto (MQTT 5, shared subscription) and the console's hazard ledger follows each
incident through its lifecycle. A duplicate delivery is counted once; a payload that breaks the
schema is rejected with its field and never reaches the ledger."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiomqtt

from gasguard.tools.sim.syndevice import SynDevice, run_tcp

from .conftest import KEYS

INCIDENT_1 = ("alarm.high", "valve.closed", "ack", "reset.refused", "alarm.clear", "reset")
INCIDENT_2 = ("alarm.low", "alarm.clear")  # a low alarm that never closed the valve
INCIDENT_3 = ("alarm.high", "valve.closed")  # still open when the ledger is read


class Console:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gasguard.tools.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None and not any(text in x for x in self.lines):
                break
            time.sleep(0.05)
        raise TimeoutError("no %r from the console:\n%s" % (text, "\n".join(self.lines[-20:])))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(15)


def test_ledger_follows_each_incident_through_its_lifecycle(tmp_path: Path, mosquitto, gateways):
    gw = gateways.start(gateways.config(mosquitto, protocol="5"))
    ledger = tmp_path / "ledger.sqlite"
    con = Console(
        ["regulator", "watch", "--broker", mosquitto.url, "--ledger", str(ledger), "--no-table"]
    )
    try:
        con.wait("watching 127.0.0.1")
        dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
        kinds = INCIDENT_1 + INCIDENT_2 + INCIDENT_3
        asyncio.run(run_tcp(dev, "127.0.0.1", gw.tcp_port, len(kinds), kinds=kinds))
        last = con.wait("incident #3: valve closed")

        # the same event delivered twice (a publish retried after a lost PUBACK), and a payload
        # a broken or hostile publisher sent: neither may change the ledger
        first = next(x for x in con.lines if "incident #1 opened" in x)
        assert "kitchen-1" in first and last

        async def inject() -> None:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
                topic = "gasguard/v1/site-9/kitchen-1/events"
                dup = _captured_event(ledger, "kitchen-1:%s:1:1" % dev.inst)
                await c.publish(topic, json.dumps(dup), qos=1)
                bad = dict(dup, id="kitchen-1:%s:1:999" % dev.inst)
                bad["data"] = dict(dup["data"], lel=5000)
                await c.publish(topic, json.dumps(bad), qos=1)

        asyncio.run(inject())
        con.wait("REJECTED gasguard/v1/site-9/kitchen-1/events")
    finally:
        rc = con.stop()
    assert rc == 0, "\n".join(con.lines[-20:])
    summary = con.lines[-1]
    assert "duplicates 1" in summary and "invalid 1" in summary, summary
    assert "events in ledger %d" % (1 + len(kinds)) in summary, (
        summary
    )  # + the gateway's device.online
    rejected = next(x for x in con.lines if x.startswith("REJECTED"))
    assert "data.lel must be smaller than or equal to 200" in rejected, rejected

    out = tmp_path / "incidents.csv"
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "regulator", "export"]
        + ["--ledger", str(ledger), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
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
    assert one["refusals"] == "1"
    assert 0 <= float(one["to_acknowledged_s"]) <= float(one["duration_s"])
    # incident 2: the valve never closed, so the clear ends it
    assert two["valve_closed_at"] == "" and two["closed_at"] == two["cleared_at"] != ""
    # incident 3: open, valve closed, nobody has acted yet
    assert three["valve_closed_at"] and not three["acknowledged_at"] and not three["closed_at"]


def _captured_event(ledger: Path, event_id: str) -> dict:
    import sqlite3

    db = sqlite3.connect(ledger)
    try:
        (payload,) = db.execute("SELECT payload FROM events WHERE id=?", (event_id,)).fetchone()
    finally:
        db.close()
    return json.loads(payload)
