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
    said = r.stdout + r.stderr
    assert r.returncode in (0, 1), said  # 1: a target missed on a busy machine
    out = json.loads(out_file.read_text())
    assert {"units", "devices", "events_per_s", "alarm_to_ledger_p99_ms", "overview_query_ms",
            "lost", "duplicates"} <= out.keys()  # fmt: skip
    assert (out["units"], out["devices"]) == (200, 400)
    assert set(out["events_per_s"]) == {"1"} and out["events_per_s"]["1"] > 0
    assert out["lost"] == 0 and out["duplicates"] == 0 and out["rejected"] == 0, said
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
            assert (m.payload["data"]["kind"], m.payload["data"]["seq"]) == (kind, 7)
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


def test_overview_counts_by_nearest_district(db_url):
    """The overview the bench times, counted in SQL: a unit under a district nested in another
    counts in the nearer; a node in a parent loop, a node nobody registered, a unit on the city
    itself and sites no unit names count under no district."""
    from gasguard.regulator import views
    from gasguard.regulator.store import open_store

    st = open_store(db_url, create=True)
    with st.transaction():
        for r in [("c", None, "city", "C"), ("c/a", "c", "district", "A"),
                  ("c/b", "c", "district", "B"), ("c/a/s", "c/a", "street", "S"),
                  ("c/a/s/g", "c/a/s", "grid", "G"), ("c/b/in", "c/b", "district", "In"),
                  ("c/b/in/s", "c/b/in", "street", "S2"), ("loop1", "loop2", "street", "L1"),
                  ("loop2", "loop1", "street", "L2")]:  # fmt: skip
            st.x("INSERT INTO nodes VALUES (?,?,?,?)", r)
        for site, node in [("u1", "c/a/s/g"), ("u2", "c/a"), ("u3", "c/b/in/s"), ("u4", "loop1"),
                           ("u5", "c"), ("u6", "nowhere"), ("u7", "c/b")]:  # fmt: skip
            st.x("INSERT INTO units (site, name, address, gas, responsible, phone, node) "
                 "VALUES (?,'n','a','ng','r','1',?)", (site, node))  # fmt: skip
        for i, site in enumerate(["u1", "u1", "u2", "u3", "u4", "u5", "u6", "x9", "x9", "u7"]):
            st.x(
                "INSERT INTO devices (site, device, online) VALUES (?,?,?)",
                (site, "d%d" % i, i % 2),
            )
        for i, (site, closed) in enumerate(
            [("u1", None), ("u3", None), ("x9", None), ("u2", "t")]
        ):
            st.x("INSERT INTO incidents VALUES (?,?,'d','i',1,'high','opened','[]','[]',1,'x',"
                 "NULL,NULL,NULL,NULL,?,'x')", ("e%d" % i, site, closed))  # fmt: skip
    o = views.overview(st)
    st.close()
    got = {d["district"]: (d["units"], d["devices"], d["online"], d["open_alarms"])
           for d in o["districts"]}  # fmt: skip
    assert got == {"c/a": (2, 3, 1, 1), "c/b": (1, 1, 1, 0), "c/b/in": (1, 1, 1, 1),
                   None: (3, 5, 2, 1)}  # fmt: skip
    assert o["totals"]["units"] == 7 and o["totals"]["overdue_hazards"] == 0
