"""`gasguard bench regulator` at a tiny scale (the full one runs by hand): its JSON has the
figures the issue names, nothing published is lost, no alarm makes two incidents, and the load
it publishes is what the ingest accepts (nothing rejected)."""

from __future__ import annotations

import json
import subprocess
import sys

from gasguard.regulator import boundary
from gasguard.tools.bench import bench_regulator as bench


def test_tiny_city_is_stored_whole(tmp_path):
    out_file = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "bench", "regulator", "--units", "200",
         "--workers", "1", "--storm", "50", "--no-fsync", "--json", str(out_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stderr  # 1: a target missed on a busy machine
    out = json.loads(out_file.read_text())
    assert {"units", "devices", "events_per_s", "alarm_to_ledger_p99_ms", "overview_query_ms",
            "lost", "duplicates"} <= out.keys()  # fmt: skip
    assert (out["units"], out["devices"]) == (200, 400)
    assert set(out["events_per_s"]) == {"1"} and out["events_per_s"]["1"] > 0
    assert out["lost"] == 0 and out["duplicates"] == 0 and out["rejected"] == 0
    assert out["storm_alarms"] == 50 and out["alarm_to_ledger_p99_ms"] is not None
    assert out["overview_units"] == 200 and out["postgres_fsync"] is False
    assert "fsync off" in r.stdout  # said plainly, not only in the JSON
    assert ("0 lost", "pass") in [tuple(line.rsplit(None, 1)) for line in r.stdout.splitlines()
                                  if line.startswith("0 lost")]  # fmt: skip


def test_payloads_pass_the_ingest_border():
    """Byte substitution into the gateway's own encoding yields what boundary.check accepts:
    a template gone wrong would be measured as rejections, not as ingest."""
    devs = bench.devices_of(3, 6)
    times = bench.Times()
    for kind in ("selftest", "alarm.high"):
        for topic, payload in bench.events(bench.event_template(kind), devs, 7, bench.T0, times):
            m = boundary.check(topic.decode(), payload)
            assert (m.payload["data"]["kind"], m.payload["data"]["boot"]) == (kind, 7)
    for topic, payload in bench.states(bench.state_template(), devs, 7, bench.T0, times):
        assert boundary.check(topic.decode(), payload).kind == "state"


def test_flood_frames_are_mqtt_publishes(tmp_path):
    """Each frame: QoS 1 PUBLISH (retain as asked), its length, topic and packet id in turn."""
    n = bench.mqtt_flood.encode(
        [(b"a/b", b"x" * 200, False), (b"c", b"y", True)], tmp_path / "p", tmp_path / "i"
    )
    data = (tmp_path / "p").read_bytes()
    assert n == 2 and data[0] == 0x32 and data[1:3] == bytes((0xCF, 0x01))  # 207, two bytes
    second = data[3 + 207 :]
    assert (
        second[:2] == bytes((0x33, 6))
        and second[2:5] == b"\x00\x01c"
        and second[5:7] == b"\x00\x02"
    )
