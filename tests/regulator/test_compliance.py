"""Compliance per unit on real SQLite and PostgreSQL: each of the checklist's five findings raised
by what happens on a real site (a detector for the wrong gas, a board gone silent, a sensor in
calibration, a detector past its life), cleared when it is put right, reopened when it comes
back; evaluated again, nothing changes. The ingest drives it: a state on the wire clears a
finding with nobody running anything."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import time

import pytest

from gasguard.protocol import cloudevents
from gasguard.regulator import boundary, compliance, registry
from gasguard.regulator.compliance import Rules, evaluate, spell
from gasguard.regulator.sheet import Sheet
from gasguard.regulator.store import open_store

from .conftest import INSTANCE, T0, wait_rows

SITE, DEV = "sh-xuhui-0042", "hotpot-88-main"
HEADER = [
    "site",
    "name",
    "address",
    "gas",
    "responsible",
    "phone",
    "city",
    "district",
    "street",
    "grid",
    "device",
    "detector_address",
    "detector_gas",
    "mount_height_m",
    "ceiling_m",
    "distance_m",
    "above_appliance",
    "installed",
    "calibration_due",
    "standard",
    "high_alarm_pct",
]


def at(seconds: float) -> datetime.datetime:
    """T0 (2025-10-09) plus seconds, as an evaluation's now."""
    return datetime.datetime.fromtimestamp(T0 + seconds, datetime.UTC)


def row(
    *,
    gas="天然气",
    device=DEV,
    addr=1,
    det_gas="甲烷",
    h=3.0,
    ceiling=3.2,
    dist=2.5,
    above="否",
    installed="2025-09-01",
    cal="2026-09-01",
    std="GB 15322.1-2019",
    high=50,
) -> list:
    """One detector of the hotpot restaurant, installed as docs/install.md says."""
    unit = [
        SITE,
        "海底捞(徐汇店)",
        "漕溪北路88号",
        gas,
        "王伟",
        "021-64381234",
        "上海市",
        "徐汇区",
        "湖南路街道",
        "第3网格",
    ]
    if device is None:
        return unit + [""] * 11
    return unit + [device, addr, det_gas, h, ceiling, dist, above, installed, cal, std, high]


def register(store, *rows: list) -> None:
    sheet = Sheet("csv", HEADER, [(n + 2, r) for n, r in enumerate(rows)])
    registry.apply(store, registry.plan(sheet))


def feed(store, *ces: dict) -> None:
    msgs = []
    for ce in ces:
        topic = (
            cloudevents.topic_state(SITE, DEV)
            if ce["type"] == "gasguard.device.state"
            else cloudevents.topic_events(SITE, DEV)
        )
        msgs.append(boundary.check(topic, json.dumps(ce).encode()))
    store.write(msgs)


def state(t: float, online: bool = True, valve: str = "open", boot: int = 2) -> dict:
    """The gateway's retained state of the board, last heard at T0 + t."""
    return cloudevents.device_state(
        SITE,
        DEV,
        {
            "online": online,
            "instance": INSTANCE,
            "boot": boot,
            "fw": "1.4.0",
            "valve": valve,
            "alarm": "none",
            "last_seen": T0 + t,
        },
        T0 + t,
    )


def event(kind: str, t: float, seq: int, boot: int = 2, **body) -> dict:
    b = {"id": [boot, seq], "kind": kind, "up": seq, "time": T0 + t, **body}
    return cloudevents.device_event(SITE, DEV, INSTANCE, b, T0 + t)


def offline(t: float) -> dict:
    return cloudevents.gateway_event(
        SITE, DEV, "device.offline", "%s:offline:%s:1:%d" % (DEV, "0" * 16, t * 1e6), T0 + t,
        "no heartbeat for 30 s",
    )


def findings(store, open_only: bool = True) -> dict[tuple[str, str], dict]:
    q = "SELECT * FROM findings" + (" WHERE cleared_at IS NULL" if open_only else "")
    return {(r["subject"], r["kind"]): r for r in store.rows(q)}


@pytest.fixture
def store(db_url):
    s = open_store(db_url, create=True)
    yield s
    s.close()


# --- each finding, raised and cleared ----------------------------------------------------------


def test_no_detector_until_one_is_registered_and_heard(store):
    register(store, row(device=None))
    evaluate(store, at(0))
    (f,) = findings(store).values()
    assert (f["subject"], f["kind"]) == ("", "no_detector")
    assert f["detail"].startswith("no detector registered for this unit [GB 50028 §10.8")
    assert f["since"] == spell(at(0))
    register(store, row())  # the district records the detector: nothing has heard it yet
    evaluate(store, at(60))
    f = findings(store)[("", "no_detector")]
    assert "no device of this unit has ever been heard (hotpot-88-main)" in f["detail"]
    assert f["since"] == spell(at(0))  # the same finding, still open since it was first seen
    feed(store, state(100))  # the gateway publishes the board's state
    out = evaluate(store, at(120))
    assert out.cleared == [(SITE, "", "no_detector")] and out.raised == []
    assert findings(store) == {}  # installed right, heard: nothing else holds
    cleared = findings(store, open_only=False)[("", "no_detector")]
    assert cleared["cleared_at"] == spell(at(120))


def test_a_detector_for_the_wrong_gas_until_the_district_records_the_right_one(store):
    lpg = dict(gas="液化石油气", h=0.2, ceiling=None, dist=2.0)
    register(store, row(det_gas="甲烷", **lpg))  # a methane sensor in an LPG kitchen
    feed(store, state(0))
    evaluate(store, at(10))
    assert set(findings(store)) == {(DEV, "wrong_gas")}
    detail = findings(store)[(DEV, "wrong_gas")]["detail"]
    assert detail == (
        "detector at Modbus address 1: a methane sensor cannot detect LPG; use "
        "propane or butane or lpg [gas type (GB 50028 §10.8.2)]"
    )
    register(store, row(det_gas="丙烷", **lpg))
    evaluate(store, at(20))
    assert findings(store) == {}
    assert findings(store, False)[(DEV, "wrong_gas")]["cleared_at"] == spell(at(20))


def test_a_detector_in_the_wrong_place_until_it_is_moved(store):
    register(store, row(h=2.0, dist=9.0, above="是"), row(addr=2, h=None, dist=None))
    feed(store, state(0))
    evaluate(store, at(10))
    detail = findings(store)[(DEV, "wrong_position")]["detail"]
    assert (
        "detector at Modbus address 1: 1.20 m below the 3.20 m ceiling; natural gas rises, "
        "mount it within 0.3 m [mounting height, natural gas (GB 50028 §10.8.2: within 0.3 m "
        "of the ceiling)]"
    ) in detail
    assert "9.0 m from the appliance; at most 8 m for natural gas" in detail
    assert "directly above the appliance" in detail and "CJJ/T 146-2011" in detail
    assert "detector at Modbus address 2: placement not recorded: height above the floor" in detail
    register(store, row(), row(addr=2))
    evaluate(store, at(20))
    assert findings(store) == {}


def test_a_detector_below_standard_household_or_wrong_set_point(store):
    register(store, row(std="GB 15322.2-2019"), row(addr=2, high=40))
    feed(store, state(0))
    evaluate(store, at(10))
    detail = findings(store)[(DEV, "below_standard")]["detail"]
    assert (
        "detector at Modbus address 1: certified to GB 15322.2-2019, not GB 15322.1 "
        "(commercial point detectors) [GB 15322.1-2019]"
    ) in detail
    assert "detector at Modbus address 2: high alarm must be 50 %LEL, not 40.0" in detail
    register(store, row(), row(addr=2))
    evaluate(store, at(20))
    assert findings(store) == {}


def test_not_working_when_silent_past_the_threshold_cleared_when_heard_reopened_offline(store):
    register(store, row())
    feed(store, state(0))
    evaluate(store, at(30 * 60))
    assert findings(store) == {}  # half an hour silent: within the hour
    evaluate(store, at(61 * 60))
    f = findings(store)[(DEV, "not_working")]
    assert f["detail"] == (
        "not heard since 2025-10-09T08:53:20.000Z (over 1 h) [the gateway's stream]"
    )
    feed(store, state(62 * 60))  # the gateway is back and publishes the board's state
    evaluate(store, at(62 * 60 + 5))
    assert findings(store) == {}
    feed(store, offline(70 * 60))  # the gateway says the board went away
    evaluate(store, at(100 * 60))
    assert findings(store) == {}
    evaluate(store, at(131 * 60))
    f = findings(store)[(DEV, "not_working")]
    assert f["detail"].startswith("offline since 2025-10-09T10:03:20")
    assert f["since"] == spell(at(131 * 60))  # reopened: a new since, one row
    assert len(findings(store, False)) == 1
    # a shorter threshold, configured: the same silence is found sooner
    feed(store, state(140 * 60))
    evaluate(store, at(150 * 60), rules=Rules(offline_after_s=300))
    assert "not heard since" in findings(store)[(DEV, "not_working")]["detail"]


def test_not_working_while_a_detector_is_in_calibration_or_fault_and_a_valve_fault(store):
    register(store, row(), row(addr=2))
    feed(
        store,
        state(0),
        event("boot", 1, 1),
        event("detector.fault", 5, 2, det=1, detail="detector state calibration"),
    )
    evaluate(store, at(10))
    assert findings(store) == {}  # a calibration (or warm-up) of minutes is not a finding yet
    evaluate(store, at(5 + 15 * 60))
    detail = findings(store)[(DEV, "not_working")]["detail"]
    assert detail == "detector 2: calibration since 2025-10-09T08:53:25.000Z [GB 15322.1-2019]"
    feed(store, event("detector.restored", 1000, 3, det=1))
    evaluate(store, at(1010))
    assert findings(store) == {}
    feed(store, event("detector.fault", 1100, 4, det=0, detail="detector state fault"))
    evaluate(store, at(2100))
    assert "detector 1: fault since" in findings(store)[(DEV, "not_working")]["detail"]
    # the board reboots with the detector healthy again: it reports faults anew at each boot
    feed(store, event("boot", 2200, 1, boot=3), state(2200, valve="fault", boot=3))
    evaluate(store, at(2210))
    assert findings(store)[(DEV, "not_working")]["detail"] == (
        "valve fault (its retained state) [GB 50028 §10.8.4]"
    )
    feed(store, state(2300, boot=3))
    evaluate(store, at(2310))
    assert findings(store) == {}


def test_not_working_past_service_life_or_calibration_date(store):
    register(store, row())
    feed(store, state(0))
    quiet = Rules(offline_after_s=10 * 365 * 86400)  # the board's silence is not this test's
    evaluate(store, datetime.datetime(2026, 9, 2, tzinfo=datetime.UTC), rules=quiet)
    assert findings(store)[(DEV, "not_working")]["detail"] == (
        "detector at Modbus address 1: calibration was due 2026-09-01 [GB 15322.1-2019]"
    )
    register(store, row(cal="2029-09-01"))  # calibrated
    evaluate(store, datetime.datetime(2026, 9, 3, tzinfo=datetime.UTC), rules=quiet)
    assert findings(store) == {}
    evaluate(store, datetime.datetime(2028, 9, 2, tzinfo=datetime.UTC), rules=quiet)
    assert (
        "past its service life (ended 2028-09-01)"
        in (findings(store)[(DEV, "not_working")]["detail"])
    )  # installed 2025-09-01, 3 years
    register(store, row(installed="2028-09-02", cal="2029-09-01"))  # replaced
    evaluate(store, datetime.datetime(2028, 9, 3, tzinfo=datetime.UTC), rules=quiet)
    assert findings(store) == {}


def test_not_working_when_the_event_log_chain_broke_or_events_were_lost(store):
    register(store, row())
    feed(
        store,
        state(0),
        event("tamper", 1, 1, detail="event log chain broken at record 12"),
        event("tamper", 2, 1, boot=3, detail="event log chain broken at record 12"),
        event("events.lost", 3, 2, boot=3, n=5),
    )
    feed(store, state(100))
    evaluate(store, at(110))
    assert findings(store)[(DEV, "not_working")]["detail"] == (
        "event log chain broken at record 12 [GB 16808-2025: record storage]; events lost in "
        "the last 30 days: events.lost 5 [GB 16808-2025: record storage]"
    )
    feed(store, state(31 * 86400))
    evaluate(store, at(31 * 86400 + 10))  # a month without a break or a loss
    assert findings(store) == {}


def test_evaluating_again_changes_nothing(store):
    register(
        store,
        row(det_gas="丙烷", h=2.0),
        row(addr=2, std="GB 15322.2-2019"),
        row(device="back-kitchen"),
    )
    feed(store, state(0))
    first = evaluate(store, at(2 * 3600))
    assert {k for _, _, k in first.raised} == {
        "wrong_gas",
        "wrong_position",
        "below_standard",
        "not_working",
    }
    before = findings(store, False)
    again = evaluate(store, at(2 * 3600))
    later = evaluate(store, at(2 * 3600 + 60))
    for out in (again, later):
        assert (out.raised, out.cleared, out.changed) == ([], [], 0)
    assert findings(store, False) == before
    assert out.open == len(before) == 5  # back-kitchen: never heard; main: four findings


def test_only_the_sites_asked_for_are_touched_and_a_sweep_clears_an_unregistered_one(store):
    register(store, row(device=None))
    evaluate(store, at(0))
    store.x(
        "INSERT INTO findings VALUES ('gone-site', '', 'no_detector', 'x', ?, NULL)",
        (spell(at(0)),),
    )
    out = evaluate(store, at(10), sites=[SITE, "unknown"])
    assert (out.raised, out.cleared) == ([], [])
    out = evaluate(store, at(20))
    assert out.cleared == [("gone-site", "", "no_detector")]


# --- how it is driven --------------------------------------------------------------------------


def test_the_driver_evaluates_touched_sites_settled_and_sweeps_and_never_raises(store, tmp_path):
    register(store, row(device=None))
    clock = [1000.0]
    logs: list[str] = []
    d = compliance.Driver(sweep=False, log=logs.append, clock=lambda: clock[0])
    assert d.run_due(store) is None  # nothing touched, no sweep: nothing to do
    d.touched([SITE])
    assert d.run_due(store).raised == [(SITE, "", "no_detector")]
    d.touched([SITE])
    assert d.run_due(store) is None  # within SETTLE_S of the last: waits
    clock[0] += compliance.SETTLE_S
    assert d.run_due(store) is not None
    sweeper = compliance.Driver(sweep=True, log=logs.append, clock=lambda: clock[0])
    assert sweeper.run_due(store) is not None and sweeper.run_due(store) is None
    clock[0] += compliance.SWEEP_EVERY_S
    assert sweeper.run_due(store) is not None
    broken = open_store(str(tmp_path / "gone.db"), create=True)
    broken.close()
    d.touched([SITE])
    clock[0] += 10
    assert d.run_due(broken) is None  # a closed connection: logged, not raised
    assert logs and logs[-1].startswith("compliance: ") and "next run catches up" in logs[-1]


def test_the_ingest_clears_a_finding_when_the_boards_state_arrives(
    broker, db_url, ingests, publisher
):
    s = open_store(db_url, create=True)
    try:
        register(s, row())
    finally:
        s.close()
    ing = ingests(broker.url, db_url).start()  # worker 0 sweeps at start: nobody heard it yet
    q = "SELECT kind, cleared_at FROM findings WHERE kind = 'no_detector'"
    wait_rows(db_url, q, lambda r: r and r[0]["cleared_at"] is None)
    now = time.time()
    ce = cloudevents.device_state(
        SITE, DEV, {"online": True, "instance": INSTANCE, "boot": 1, "last_seen": now}, now
    )
    publisher.send(cloudevents.topic_state(SITE, DEV), json.dumps(ce).encode(), retain=True)
    wait_rows(db_url, q, lambda r: r and r[0]["cleared_at"] is not None, timeout=15)
    assert ing.stop() == 0


# --- the command -------------------------------------------------------------------------------


def run(db: str, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="gasguard")
    r = parser.add_subparsers(dest="command").add_parser("regulator")
    rs = r.add_subparsers(dest="action", required=True)
    compliance.register_compliance(rs)
    r.set_defaults(run=lambda args: "watch or export")  # what tools/regulator.py does
    args = parser.parse_args(["regulator", "compliance", "--db", db, *argv])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.run(args)
    return code, out.getvalue(), err.getvalue()


def test_the_compliance_command_lists_a_units_findings(db_url, store):
    today = datetime.date.today()  # the command evaluates at the real now
    fresh = dict(installed=str(today), cal=str(today.replace(year=today.year + 1)))
    register(store, row(det_gas="丙烷", **fresh))
    code, out, err = run(db_url, "--site", SITE, "--evaluate", "--json")
    assert (code, err) == (1, "")  # open findings: the check failed
    doc = json.loads(out)
    assert doc["open"] == 2
    assert {f["kind"] for f in doc["findings"]} == {"no_detector", "wrong_gas"}
    assert {f["name"] for f in doc["findings"]} == {"海底捞(徐汇店)"}
    code, out, _ = run(db_url, "--site", SITE)
    assert code == 1 and "wrong_gas" in out and "(unit)" in out
    assert "§10.8.2" in out  # the rule cited in brackets is shown, not taken as rich markup
    register(store, row(**fresh))
    feed(store, state(time.time() - T0))
    code, out, _ = run(db_url, "--evaluate")
    assert (code, out.strip()) == (0, "no open findings")
    code, out, _ = run(db_url, "--cleared", "--json")
    assert code == 0 and len(json.loads(out)["findings"]) == 2
    code, out, err = run(db_url, "--site", "nobody", "--json")
    assert code == 2 and json.loads(out) == {"error": "--site nobody: not a registered unit"}
    assert run(db_url, "--offline-after", "0")[0] == 2
