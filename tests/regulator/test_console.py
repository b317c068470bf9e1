"""`gasguard regulator watch` on the store: bounded output with thousands of devices, filters,
--once --json, hostile command lines, and local times with no None."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from gasguard.regulator import boundary, console, views
from gasguard.regulator.store import open_store

from .city import DARK_SITES, GATEWAYS_DOWN, PER_SITE, build_city
from .city_registry import make_registry
from .conftest import board_event


def watch(*argv: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "regulator", "watch", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def snap(db: str, *argv: str) -> dict:
    r = watch("--db", db, "--once", "--json", *argv)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # the whole of stdout is one JSON document


def test_5000_devices_make_one_bounded_summary_not_a_line_each(db_url):
    build_city(db_url, sites=500, alarms=300).close()
    t0 = time.monotonic()
    r = watch("--db", db_url, "--every", "0.3", "--duration", "3", env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    out = r.stdout.splitlines()
    # nothing changed after the first look: one summary, not one per look, not one per device
    assert len(out) <= 30, r.stdout
    assert sum("devices 5000" in x for x in out) == 1, r.stdout
    totals = " ".join(out[1:3])
    offline = DARK_SITES * PER_SITE + (500 - DARK_SITES)  # dark sites, and one device elsewhere
    assert "online %d, offline %d" % (5000 - offline, offline) in totals, totals
    assert "open incidents: high 300, low 0" in totals, totals
    assert "gateways offline %d of 500" % GATEWAYS_DOWN in totals, totals
    assert "rejected 3 (1 kinds)" in totals, totals
    assert "sites offline: %d" % DARK_SITES in r.stdout
    assert "… and %d more" % (300 - console.LOG_INCIDENTS) in r.stdout
    assert "None" not in r.stdout


def test_a_terminal_screen_fits_its_height_and_puts_the_worst_first(db_url):
    store = build_city(db_url, sites=600, alarms=40, low=40)
    snap_ = views.snapshot(store, views.Filters(), limit=100)
    for height in (10, 24, 50):
        text = console.render(snap_, height)
        assert len(text.splitlines()) <= height, (height, text)
    text = console.render(snap_, 24)
    rows = [x for x in text.splitlines() if "/dev-00" in x]
    assert rows and all(x.split()[0] == "HIGH" for x in rows), text  # high before low
    # oldest first among the high ones: site-0000 alarmed first
    assert "site-0000/dev-00" in rows[0], rows
    store.close()


def test_a_look_redraws_only_when_the_store_changed(db_url):
    store = build_city(db_url, sites=5, alarms=1)
    said: list[str] = []
    clock = [0.0]
    w = console.Watch(store, views.Filters(), said.append, clock=lambda: clock[0])
    assert w.look() and not w.look() and len(said) == 1
    clock[0] += 1
    store.write([boundary.check(*board_event("site-0003", "dev-00", "alarm.high", 1, 1))])
    assert w.look() and "high 2" in said[-1]
    clock[0] += console.STALE_S  # nothing changed, but the ages shown went stale
    assert w.look()
    store.close()


def test_filters_by_site_state_and_district(db_url):
    store = build_city(db_url, sites=30, alarms=6, low=2, closed=3)
    # units under Xuhui at district, street and grid level; one in Minhang; the rest unregistered
    make_registry(store, {"site-0000": "xuhui", "site-0001": "xuhui-tianping",
                          "site-0002": "xuhui-tianping-g3", "site-0003": "minhang"})  # fmt: skip
    store.close()
    s = snap(db_url, "--site", "site-0002")
    assert s["totals"]["devices"] == PER_SITE and s["totals"]["sites"] == 1
    assert [i["site"] for i in s["incidents"]] == ["site-0002"]

    s = snap(db_url, "--district", "xuhui")
    assert s["totals"]["units"] == 3 and s["totals"]["devices"] == 3 * PER_SITE
    assert sorted(i["site"] for i in s["incidents"]) == ["site-0000", "site-0001", "site-0002"]
    assert snap(db_url, "--district", "Minhang")["totals"]["units"] == 1  # by name too
    assert snap(db_url, "--district", "sh")["totals"]["devices"] == 0  # a city, not a district
    assert snap(db_url, "--district", "x' OR '1'='1")["totals"]["devices"] == 0

    s = snap(db_url, "--state", "closed")
    assert s["incidents_total"] == 3 and {i["stage"] for i in s["incidents"]} == {"closed"}
    assert all(i["to_reset_s"] is not None for i in s["incidents"])
    s = snap(db_url)  # open: high first, then low
    assert s["incidents_total"] == 8
    assert [i["level"] for i in s["incidents"]] == ["high"] * 6 + ["low"] * 2
    assert snap(db_url, "--state", "all")["incidents_total"] == 11
    assert snap(db_url, "--state", "acknowledged")["incidents_total"] == 0


def test_district_without_a_registry_is_bad_usage(db_url):
    build_city(db_url, sites=2, alarms=0).close()
    r = watch("--db", db_url, "--once", "--district", "xuhui")
    assert r.returncode == 2 and "no registry" in r.stderr, r.stderr
    assert r.stdout == ""


def test_once_json_is_json_only_and_the_screen_local_time_without_none(db_url):
    build_city(db_url, sites=3, alarms=1).close()
    s = snap(db_url)
    assert set(s) >= {"at", "totals", "sites_offline", "gateways_offline", "incidents"}
    (inc,) = s["incidents"]
    assert inc["level"] == "high" and inc["detectors"] == [0] and inc["age_s"] > 0
    r = watch("--db", db_url, "--once", env={"TZ": "Asia/Shanghai"})
    assert r.returncode == 0, r.stderr
    assert "+08:00" in r.stdout and "None" not in r.stdout, r.stdout
    assert "2025-11-25 00:00:00 +08:00" in r.stdout  # the alarm at 2025-11-24T16:00:00Z


def test_hostile_databases_and_arguments(tmp_path: Path, postgres):
    missing = tmp_path / "nope.db"
    r = watch("--db", str(missing), "--once")
    assert r.returncode == 2 and "no such database file" in r.stderr
    assert not missing.exists()  # a console never makes a database
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    assert watch("--db", str(junk), "--once").returncode == 2
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE orders (id INTEGER)").connection.close()
    r = watch("--db", str(other), "--once")
    assert r.returncode == 2 and "regulator" in r.stderr
    assert watch("--db", "mysql://x/y", "--once").returncode == 2
    empty = postgres.create_database("console_empty")
    assert watch("--db", empty, "--once").returncode == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = watch("--db", "postgresql://postgres@127.0.0.1:%d/x" % port, "--once")
    assert r.returncode == 3 and "unreachable" in r.stderr, r.stderr
    good = tmp_path / "good.db"
    open_store(str(good), create=True).close()
    for bad in (["--every", "0"], ["--every", "nan"], ["--state", "bogus"]):
        r = watch("--db", str(good), "--once", *bad)
        assert r.returncode == 2, (bad, r.stderr)


def test_two_consoles_at_once_both_see_every_incident(db_url, broker, publisher, ingests):
    """Consoles read the store: neither takes events from the other or from the ingest (the old
    console's shared subscription split the stream between two consoles)."""
    # a group of its own: other ingests may run on this machine (the lock is per group and node)
    ingests(broker.url, db_url, "--group", "console-test-%d" % os.getpid()).start()
    argv = ["--db", db_url, "--json", "--every", "0.2", "--duration", "12"]
    cmd = [sys.executable, "-m", "gasguard.tools.cli", "regulator", "watch", *argv]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        # each console's first look (an empty store) before the alarms: a loaded machine may
        # take longer than any fixed pause to start them
        firsts = [p.stdout.readline() for p in procs]
        publisher.send_many(
            [
                board_event("site-%d" % (k % 4), "kitchen-%d" % k, "alarm.high", 1, 1, lel=55.0)
                for k in range(20)
            ]  # fmt: skip
        )
        rest = [p.communicate(timeout=60)[0] for p in procs]
        outs = [first + more for first, more in zip(firsts, rest, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for out in outs:
        lines = [json.loads(x) for x in out.splitlines()]
        assert len(lines) >= 2, out[-500:]  # the first look, then the change
        last = lines[-1]
        assert last["incidents_total"] == 20 and last["totals"]["devices"] == 20, last["totals"]
        assert last["totals"]["open_incidents"] == {"high": 20, "low": 0}
