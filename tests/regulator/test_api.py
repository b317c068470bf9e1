"""The JSON API (regulator/api.py) on both backends, through Starlette's TestClient: what each
endpoint answers, and what hostile query strings get (400, never a query built from them)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from starlette.testclient import TestClient

from gasguard.regulator.api import create_app
from gasguard.regulator.store import open_store

from .city import DARK_SITES, GATEWAYS_DOWN, PER_SITE, build_city
from .city_registry import make_hazards, make_registry


@pytest.fixture
def city(db_url):
    store = build_city(db_url, sites=40, alarms=5, low=2, closed=3)
    make_registry(store, {"site-0000": "xuhui", "site-0001": "xuhui-tianping-g3",
                          "site-0002": "minhang", "site-0003": "minhang"})  # fmt: skip
    store.close()
    with TestClient(create_app(db_url)) as client:
        yield client


def test_overview_counts_per_district(city, db_url):
    o = city.get("/api/overview").json()
    assert o["registry"] is True
    by = {d["district"]: d for d in o["districts"]}
    assert by["xuhui"]["units"] == 2 and by["xuhui"]["name"] == "Xuhui"
    assert by["xuhui"]["devices"] == 2 * PER_SITE and by["xuhui"]["open_alarms"] == 2
    assert by["minhang"]["units"] == 2 and by["minhang"]["open_alarms"] == 2
    assert by[None]["devices"] == 36 * PER_SITE  # sites no unit names
    assert o["totals"]["open_alarms"] == 7 and o["totals"]["devices"] == 40 * PER_SITE
    assert o["totals"]["overdue_hazards"] == 0  # none yet
    store = open_store(db_url)
    make_hazards(store, [("site-0000", "open", "2020-01-01T00:00:00.000Z"),
                         ("site-0000", "closed", "2020-01-01T00:00:00.000Z"),
                         ("site-0002", "dispatched", "2999-01-01T00:00:00.000Z")])  # fmt: skip
    store.close()
    o = city.get("/api/overview").json()
    by = {d["district"]: d for d in o["districts"]}
    assert by["xuhui"]["overdue_hazards"] == 1 and by["minhang"]["overdue_hazards"] == 0


def test_overview_counts_unacknowledged_alarms_and_the_compliance_rate(city, db_url):
    """Per district, what a regulator asks first: open alarms nobody acknowledged for more
    than 5 minutes, and the share of units without an open compliance finding."""
    from .ledger_helpers import finding

    store = open_store(db_url)
    hour_ago = "2020-01-01T00:00:00.000Z"
    with store.transaction():
        store.x("UPDATE incidents SET opened_at = ?, acknowledged_at = NULL "
                "WHERE closed_at IS NULL", (hour_ago,))  # fmt: skip
        store.x("UPDATE incidents SET acknowledged_at = ? WHERE site = 'site-0001'", (hour_ago,))
    finding(store, "site-0000", "no_detector")  # open
    finding(store, "site-0001", "wrong_gas", cleared_at="2026-11-21T00:00:00.000Z")  # cleared
    finding(store, "site-0002", "not_working")
    store.close()
    o = city.get("/api/overview").json()
    by = {d["district"]: d for d in o["districts"]}
    assert (by["xuhui"]["open_alarms"], by["xuhui"]["unacknowledged"]) == (2, 1)
    assert (by["xuhui"]["compliant_units"], by["xuhui"]["compliance_rate"]) == (1, 0.5)
    assert (by["minhang"]["compliant_units"], by["minhang"]["compliance_rate"]) == (1, 0.5)
    assert by[None]["compliance_rate"] is None  # no registered unit there
    assert o["totals"]["unacknowledged"] == o["totals"]["open_alarms"] - 1
    assert (o["totals"]["compliant_units"], o["totals"]["compliance_rate"]) == (2, 0.5)


def test_sites_site_incidents_gateways_rejected(city):
    s = city.get("/api/sites", params={"limit": 5}).json()
    assert s["total"] == 40 and len(s["sites"]) == 5
    first = s["sites"][0]
    assert first["site"] == "site-0000" and first["name"] == "Restaurant site-0000"
    assert first["online"] == 0 and first["open_incidents"] == 1  # a dark site
    s = city.get("/api/sites", params={"district": "xuhui"}).json()
    assert [x["site"] for x in s["sites"]] == ["site-0000", "site-0001"]

    one = city.get("/api/sites/site-0006").json()
    assert len(one["devices"]) == PER_SITE and one["unit"] is None
    assert one["gateways"][0]["gateway"] == "gw-1"
    (inc,) = one["incidents"]
    assert inc["level"] == "low" and inc["stage"] == "opened"
    assert city.get("/api/sites/nowhere").status_code == 404

    i = city.get("/api/incidents").json()
    assert i["total"] == 7 and [x["level"] for x in i["incidents"]] == ["high"] * 5 + ["low"] * 2
    i = city.get("/api/incidents", params={"state": "closed", "limit": 2}).json()
    assert i["total"] == 3 and len(i["incidents"]) == 2
    assert all(x["to_reset_s"] is not None for x in i["incidents"])
    i = city.get("/api/incidents", params={"site": "site-0001", "state": "all"}).json()
    assert i["total"] == 1

    g = city.get("/api/gateways", params={"state": "offline"}).json()
    assert g["total"] == GATEWAYS_DOWN and all(x["online"] is False for x in g["gateways"])
    assert city.get("/api/gateways").json()["total"] == 40
    r = city.get("/api/rejected").json()
    assert r["messages"] == 3 and r["distinct"] == 1
    assert r["rejected"][0]["reason"] == "not JSON"
    assert DARK_SITES  # the city has dark sites: site-0000 above is one


@pytest.mark.parametrize(
    "path, params, says",
    [
        ("/api/incidents", {"limit": "0"}, "limit"),
        ("/api/incidents", {"limit": "1001"}, "limit"),
        ("/api/incidents", {"limit": "-1"}, "limit"),
        ("/api/incidents", {"limit": "1e3"}, "limit"),
        ("/api/incidents", {"limit": "٣"}, "limit"),  # a digit, but not an ASCII one
        ("/api/incidents", {"limit": "9" * 5000}, "limit"),
        ("/api/incidents", {"state": "closed' OR 1=1 --"}, "state"),
        ("/api/incidents", {"order": "opened_at; DROP TABLE incidents"}, "unknown parameter"),
        ("/api/incidents", {"site": "x" * 129}, "site"),
        ("/api/incidents", {"site": "a\x00b"}, "site"),
        ("/api/incidents", {"site": ""}, "site"),
        ("/api/overview", {"district": "xuhui"}, "unknown parameter"),
        ("/api/sites", {"offset": "99999999"}, "offset"),
        ("/api/gateways", {"state": "opened"}, "state"),
        ("/api/rejected", {"site": "x"}, "unknown parameter"),
        ("/api/sites/site-0000", {"state": "all"}, "unknown parameter"),
    ],
)
def test_hostile_parameters_are_400_naming_them(city, path, params, says):
    r = city.get(path, params=params)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]


def test_repeated_and_injected_values_change_nothing(city, db_url):
    assert city.get("/api/incidents?limit=1&limit=2").status_code == 400
    r = city.get("/api/incidents", params={"site": "site-0001' OR '1'='1", "state": "all"})
    assert r.status_code == 200 and r.json()["total"] == 0
    r = city.get("/api/sites/site-0000' OR '1'='1")
    assert r.status_code == 404
    r = city.get("/api/incidents", params={"district": "xuhui') OR ('1'='1"})
    assert r.status_code == 200 and r.json()["total"] == 0
    assert city.get("/api/sites/%00").status_code == 400
    assert city.get("/api/incidents", params={"state": "all"}).json()["total"] == 10
    store = open_store(db_url)
    assert store.rows("SELECT count(*) AS n FROM incidents")[0]["n"] == 10  # all still there
    store.close()


def test_no_registry_district_is_400_and_overview_has_one_bucket(db_url):
    build_city(db_url, sites=3, alarms=1).close()
    with TestClient(create_app(db_url)) as c:
        r = c.get("/api/incidents", params={"district": "xuhui"})
        assert r.status_code == 400 and "no registry" in r.json()["error"]
        o = c.get("/api/overview").json()
        assert o["registry"] is False and len(o["districts"]) == 1
        assert o["districts"][0]["district"] is None and o["totals"]["open_alarms"] == 1


def test_a_lost_database_is_503_then_answers_again(postgres):
    db = postgres.create_database("api_lost")
    build_city(db, sites=2, alarms=1).close()
    with TestClient(create_app(db)) as c:
        assert c.get("/api/overview").status_code == 200
        import psycopg

        with psycopg.connect(postgres.url(), autocommit=True) as admin:  # cut its connections
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = 'api_lost' AND pid <> pg_backend_pid()")  # fmt: skip
        assert c.get("/api/overview").status_code == 503
        assert c.get("/api/overview").status_code == 200  # a new connection


def test_the_command_serves_and_refuses_a_bad_database(tmp_path, db_url):
    build_city(db_url, sites=2, alarms=1).close()
    base = [sys.executable, "-m", "gasguard.tools.cli", "regulator", "api"]
    r = subprocess.run([*base, "--db", str(tmp_path / "none.db")], capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2 and "no such database" in r.stderr
    r = subprocess.run([*base, "--db", db_url, "--listen", "nowhere"], capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2 and "--listen" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*base, "--db", db_url, "--listen", "127.0.0.1:%d" % port],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/incidents" % port) as r:
                    import json

                    assert json.load(r)["total"] == 1
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(20)
