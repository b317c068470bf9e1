"""The hazard ledger on PostgreSQL and SQLite: incidents and findings raised once, the workflow
open → dispatched → rectified → closed with every illegal step refused, the overdue list, and the
commands' exit codes."""

from __future__ import annotations

import datetime
import json
import os
import re
import threading

import pytest

from gasguard.regulator import audit, hazards
from gasguard.regulator.hazards import WorkflowError
from gasguard.regulator.store import open_store

from .conftest import board_event, rows, wait_rows
from .ledger_helpers import NOW, finding, incident, made_store, run
from .web_fixture import SOON


@pytest.fixture
def store(db_url):
    s = made_store(db_url)
    yield s
    s.close()


def _one(store, source: str) -> dict:
    return store.rows("SELECT * FROM hazards WHERE source = ?", (source,))[0]


# --- raising --------------------------------------------------------------------------------


def test_the_same_incident_synced_twice_is_one_hazard(store):
    incident(store, "ev-1")
    assert len(hazards.sync(store, NOW)) == 1
    assert hazards.sync(store, NOW) == []
    incident(store, "ev-1", peak=60.0)  # the ingest updated it: still the same incident
    assert hazards.sync(store, NOW) == []
    assert store.rows("SELECT COUNT(*) AS n FROM hazards")[0]["n"] == 1
    raises = [e for e in audit.entries(store) if e["action"] == "hazard.raise"]
    assert len(raises) == 1 and raises[0]["before"] is None
    assert raises[0]["after"]["source"] == "incident:s1/ev-1"


def test_two_syncs_at_once_raise_each_hazard_once(store, db_url):
    for n in range(50):
        incident(store, "ev-%d" % n)
    got: list[int] = []
    failed: list[BaseException] = []

    def sync_in_its_own_connection() -> None:
        try:
            s = open_store(db_url)
            try:
                got.extend(hazards.sync(s, NOW))
            finally:
                s.close()
        except BaseException as e:  # noqa: BLE001 - the test reports it
            failed.append(e)

    threads = [threading.Thread(target=sync_in_its_own_connection) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed
    assert sorted(got) == sorted(set(got)) and len(got) == 50
    assert store.rows("SELECT COUNT(*) AS n FROM hazards")[0]["n"] == 50
    assert len([e for e in audit.entries(store) if e["action"] == "hazard.raise"]) == 50


def test_deadlines_follow_severity_from_when_it_was_found(store):
    incident(store, "hi", level="high", opened_at="2026-11-30T08:00:00.000Z")
    incident(store, "lo", level="low", device="d2", opened_at="2026-11-30T08:00:00.000Z")
    finding(store, "s2", "no_detector", detail="kitchen without a leak alarm")
    finding(store, "s2", "wrong_gas", subject="d9", cleared_at="2026-11-25T00:00:00.000Z")
    hazards.sync(store, NOW)
    hi, lo = _one(store, "incident:s1/hi"), _one(store, "incident:s1/lo")
    assert (hi["severity"], hi["deadline"]) == ("high", "2026-12-01T08:00:00.000Z")
    assert (lo["severity"], lo["deadline"]) == ("low", "2026-12-03T08:00:00.000Z")
    f = _one(store, "finding:s2//no_detector")
    assert (f["kind"], f["severity"], f["status"]) == ("no_detector", "normal", "open")
    assert f["deadline"] == "2026-11-27T00:00:00.000Z" and f["summary"].startswith("kitchen")
    # a finding that no longer holds is not a hazard to raise
    assert not store.rows("SELECT id FROM hazards WHERE kind = 'wrong_gas'")


def test_a_low_alarm_that_turns_high_gets_the_high_deadline(store):
    incident(store, "ev", level="low")
    hazards.sync(store, NOW)
    incident(store, "ev", level="high", peak=80.0)
    hazards.sync(store, NOW)
    h = _one(store, "incident:s1/ev")
    assert (h["severity"], h["deadline"]) == ("high", "2026-12-01T08:00:00.000Z")
    assert "80.0" in h["summary"]
    esc = [e for e in audit.entries(store) if e["action"] == "hazard.escalate"]
    assert esc[0]["before"]["severity"] == "low" and esc[0]["after"]["severity"] == "high"


def test_deadlines_file(tmp_path):
    f = tmp_path / "d.toml"
    f.write_text('[deadlines]\nhigh = "12h"\nnormal = "30d"\n')
    got = hazards.load_deadlines(f)
    assert got["high"].total_seconds() == 12 * 3600 and got["normal"].days == 30
    assert got["low"] == hazards.DEADLINES["low"]
    for bad in ('[deadlines]\nhigh = "0h"\n', '[deadlines]\nhigh = 24\n',
                '[deadlines]\nurgent = "1h"\n', '[other]\nx = 1\n', "not toml = = ",
                '[deadlines]\nhigh = "-5h"\n', '[deadlines]\nnormal = "9999d"\n',
                '[deadlines]\nlow = "8785h"\n'):  # fmt: skip  # the last two: past a year
        f.write_text(bad)
        with pytest.raises(ValueError, match="--deadlines"):
            hazards.load_deadlines(f)


# --- the workflow ---------------------------------------------------------------------------


def test_workflow_end_to_end_with_every_illegal_step_refused(store):
    incident(store, "ev-1")
    (hid,) = hazards.sync(store, NOW)
    t = ["2026-11-30T12:%02d:00.000Z" % m for m in range(10)]

    with pytest.raises(WorkflowError, match="open: dispatch it"):
        hazards.rectify(store, hid, "fixed", "王五", t[0])
    with pytest.raises(WorkflowError, match="only a rectified hazard"):
        hazards.close(store, hid, "检查员", t[0])
    with pytest.raises(WorkflowError, match="already passed"):
        hazards.dispatch(store, hid, "张三", "2026-11-29T00:00:00.000Z", "李四", t[1])

    h = hazards.dispatch(store, hid, "张三", "2026-12-01T10:00:00.000Z", "李四", t[1])
    assert (h["status"], h["responsible"], h["dispatched_at"]) == ("dispatched", "张三", t[1])
    with pytest.raises(WorkflowError, match="only a rectified hazard"):
        hazards.close(store, hid, "检查员", t[2])
    with pytest.raises(WorkflowError, match="say what was done"):
        hazards.rectify(store, hid, "   ", "张三", t[2])

    h = hazards.rectify(store, hid, "replaced the hose; leak test passed", "张三", t[3])
    assert (h["status"], h["rectified_by"], h["note"]) == (
        "rectified",
        "张三",
        "replaced the hose; leak test passed",
    )
    with pytest.raises(WorkflowError, match="already rectified"):
        hazards.rectify(store, hid, "again", "张三", t[4])
    with pytest.raises(WorkflowError, match="谁检查、谁签名、谁负责"):
        hazards.close(store, hid, "张三", t[4])  # who rectified cannot sign it off

    h = hazards.close(store, hid, "检查员", t[5], "checked on site")
    assert (h["status"], h["verified_by"], h["closed_by"], h["closed_at"], h["check_note"]) == (
        "closed",
        "检查员",
        "检查员",
        t[5],
        "checked on site",
    )
    for step in (lambda: hazards.dispatch(store, hid, "x", None, "y", t[6]),
                 lambda: hazards.rectify(store, hid, "n", "x", t[6]),
                 lambda: hazards.close(store, hid, "z", t[6])):  # fmt: skip
        with pytest.raises(WorkflowError, match="closed hazard is final"):
            step()
    with pytest.raises(WorkflowError, match="no such hazard"):
        hazards.dispatch(store, 999, "x", None, "y", t[6])

    log = audit.entries(store, "hazard:%d" % hid)
    assert [e["action"] for e in log] == [
        "hazard.raise",
        "hazard.dispatch",
        "hazard.rectify",
        "hazard.close",
    ]
    assert [e["actor"] for e in log] == ["system:sync", "李四", "张三", "检查员"]
    for prev, e in zip(log, log[1:], strict=False):
        assert e["before"] == prev["after"]  # each change starts where the last one ended
    assert log[-1]["before"]["status"] == "rectified" and log[-1]["after"]["status"] == "closed"
    # refused steps changed nothing, so they left no audit row
    assert len(audit.entries(store)) == 4


def test_the_responsible_person_cannot_sign_off_their_own_hazard(store):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    hazards.dispatch(store, hid, "店长", None, "区监管员", NOW)
    hazards.rectify(store, hid, "fixed by the contractor", "维修工", NOW)
    with pytest.raises(WorkflowError, match="店长 is responsible"):
        hazards.close(store, hid, "店长", NOW)


@pytest.mark.parametrize("rectifier, closer", [
    ("Li Wei", "li wei"), ("Li Wei", " Li   Wei "), ("Li Wei", "Ｌｉ Ｗｅｉ"), ("李伟", "李伟 "),
    ("李伟", "李 伟"), ("Zhang San", "ZhangSan"), ("Zhang San", "Zhang\u200bSan"),
    ("Zhang San", "Zhang\u00adSan"), ("李伟", "李伟\ufeff"), ("Li Wei", "Li\u3000Wei"),
])  # fmt: skip
def test_whoever_rectified_cannot_sign_off_under_another_spelling(store, rectifier, closer):
    """A name typed differently (case, spaces, full-width letters from a Chinese keyboard) is
    still the same person: 谁检查、谁签名 means someone else checks."""
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    hazards.dispatch(store, hid, "店长", None, "区监管员", NOW)
    hazards.rectify(store, hid, "valve replaced", rectifier, NOW)
    with pytest.raises(WorkflowError, match="rectified by"):
        hazards.close(store, hid, closer, NOW)
    assert hazards.get(store, hid)["status"] == "rectified"
    assert hazards.close(store, hid, "检查员", NOW)["status"] == "closed"


def test_a_deadline_more_than_a_year_away_is_refused(store):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    with pytest.raises(WorkflowError, match="more than 365 days"):
        hazards.dispatch(store, hid, "店长", "2099-01-01T00:00:00.000Z", "区监管员", NOW)
    assert hazards.get(store, hid)["status"] == "open"
    h = hazards.dispatch(store, hid, "店长", "2027-06-01T00:00:00.000Z", "区监管员", NOW)
    assert h["deadline"] == "2027-06-01T00:00:00.000Z"


def test_the_database_refuses_a_close_signed_by_whoever_rectified(store):
    """The sign-off rule holds even for a write that goes round the workflow."""
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    store.x("UPDATE hazards SET status = 'rectified', rectified_by = 'a' WHERE id = ?", (hid,))
    with pytest.raises(Exception, match="(?i)check"):
        store.x("UPDATE hazards SET status = 'closed', closed_by = 'a' WHERE id = ?", (hid,))


def test_a_failed_check_sends_it_back_to_dispatched(store):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    hazards.dispatch(store, hid, "张三", None, "李四", NOW)
    hazards.rectify(store, hid, "done", "张三", NOW)
    h = hazards.dispatch(store, hid, "张三", "2026-12-02T00:00:00.000Z", "检查员", NOW,
                         note="still smells of gas")  # fmt: skip
    assert (h["status"], h["rectified_by"], h["check_note"]) == (
        "dispatched",
        None,
        "still smells of gas",
    )
    assert h["deadline"] == "2026-12-02T00:00:00.000Z"


def test_two_checkers_closing_at_once_one_signs(store, db_url):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    hazards.dispatch(store, hid, "张三", None, "李四", NOW)
    hazards.rectify(store, hid, "done", "张三", NOW)
    done: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(4)

    def close_as(name: str) -> None:
        s = open_store(db_url)
        try:
            start.wait(10)
            hazards.close(s, hid, name, NOW)
            done.append(name)
        except WorkflowError as e:
            refused.append(str(e))
        finally:
            s.close()

    threads = [threading.Thread(target=close_as, args=("检查员%d" % n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(done) == 1 and len(refused) == 3, refused
    assert hazards.get(store, hid)["closed_by"] == done[0]
    assert [e["actor"] for e in audit.entries(store) if e["action"] == "hazard.close"] == done


def test_overdue_lists_open_hazards_past_their_deadline_only(store):
    incident(store, "old", opened_at="2026-11-28T00:00:00.000Z")  # high: due 11-29
    incident(store, "new", device="d2", opened_at="2026-11-30T11:00:00.000Z")  # due 12-01
    incident(store, "done", device="d3", site="s2", opened_at="2026-11-20T00:00:00.000Z")
    hazards.sync(store, NOW)
    done = _one(store, "incident:s2/done")["id"]
    hazards.dispatch(store, done, "a", "2026-12-30T00:00:00.000Z", "b", "2026-11-20T01:00:00.000Z")
    hazards.rectify(store, done, "ok", "a", "2026-11-20T02:00:00.000Z")
    hazards.close(store, done, "c", "2026-11-20T03:00:00.000Z")
    over = hazards.listing(store, NOW, overdue=True)
    assert [r["source"] for r in over] == ["incident:s1/old"] and over[0]["overdue"]
    assert len(hazards.listing(store, NOW)) == 3
    assert [r["source"] for r in hazards.listing(store, NOW, site="s2")] == ["incident:s2/done"]
    # tomorrow afternoon the new one is overdue too
    later = [r["source"] for r in hazards.listing(store, "2026-12-01T12:00:00.000Z", overdue=True)]
    assert later == ["incident:s1/old", "incident:s1/new"]


# --- the commands ---------------------------------------------------------------------------


def test_commands_end_to_end_and_their_exit_codes(store, db_url, capsys):
    incident(store, "ev-1", opened_at="2020-01-01T00:00:00.000Z")  # long overdue
    assert run("hazards", "sync", "--db", db_url) == 0
    assert "1 new hazards" in capsys.readouterr().out
    assert run("hazards", "list", "--db", db_url, "--overdue", "--json") == 0
    (h,) = json.loads(capsys.readouterr().out)
    assert h["overdue"] and h["status"] == "open"
    hid = str(h["id"])
    assert run("hazards", "list", "--db", db_url) == 0
    out = capsys.readouterr().out
    assert "OVERDUE" in out and re.search(r" [+-]\d\d:\d\d", out)  # local, with the offset

    assert run("hazards", "rectify", hid, "--db", db_url, "--note", "x", "--by", "a") == 2
    assert "dispatch it to a responsible person first" in capsys.readouterr().err
    for bad in ("tomorrow", "2026-13-01", "1900-01-01"):
        assert run("hazards", "dispatch", hid, "--db", db_url, "--to", "张三",
                   "--deadline", bad, "--by", "李四") == 2  # fmt: skip
        assert "--deadline" in capsys.readouterr().err
    assert run("hazards", "dispatch", hid, "--db", db_url, "--to", " ", "--by", "李四") == 2
    assert run("hazards", "dispatch", hid, "--db", db_url, "--to", "a\nb", "--by", "李四") == 2
    capsys.readouterr()
    assert run("hazards", "dispatch", hid, "--db", db_url, "--to", "张三",
               "--deadline", SOON, "--by", "李四") == 0  # fmt: skip
    assert "dispatched" in capsys.readouterr().out
    assert run("hazards", "rectify", hid, "--db", db_url, "--note", "fixed", "--by", "张三") == 0
    assert run("hazards", "close", hid, "--db", db_url, "--by", "张三") == 2
    assert "谁检查" in capsys.readouterr().err
    assert run("hazards", "close", hid, "--db", db_url, "--by", "检查员", "--note", "ok") == 0
    assert run("hazards", "close", "99", "--db", db_url, "--by", "检查员") == 2
    assert "no such hazard" in capsys.readouterr().err
    h = hazards.get(store, int(hid))
    # the end of that day, local time, in UTC
    assert h["deadline"] == audit.spell(datetime.datetime.fromisoformat(SOON + "T23:59:59")
                                        .astimezone())  # fmt: skip
    with pytest.raises(SystemExit) as e:
        run("hazards", "close", "not-a-number", "--db", db_url, "--by", "x")
    assert e.value.code == 2


def test_commands_refuse_hostile_input_without_a_traceback(store, db_url, capsys):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    h = str(hid)
    base = ("--db", db_url, "--by", "李四")
    for argv, says in (
        (("dispatch", h, "--to", "张\x00三", *base), "NUL"),
        (("dispatch", h, "--to", "张三", "--note", "x\x00y", *base), "NUL"),
        (("dispatch", h, "--to", "\udcff", *base), "UTF-8"),
        (("dispatch", h, "--to", "张" * 101, *base), "at most"),
        (("dispatch", h, "--to", "张三", "--note", "长" * 2001, *base), "at most"),
        (("list", "--db", db_url, "--site", "s\x00"), "NUL"),
    ):
        assert run("hazards", *argv) == 2, argv
        assert says in capsys.readouterr().err
    for bad in ("99999999999999999999", "-1", "0", "1e3"):
        with pytest.raises(SystemExit) as e:
            run("hazards", "close", bad, "--db", db_url, "--by", "x")
        assert e.value.code == 2
    assert hazards.get(store, hid)["status"] == "open"
    assert [e["action"] for e in audit.entries(store)] == ["hazard.raise"]


def test_commands_refuse_a_database_that_is_not_a_regulator_one(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert run("hazards", "list", "--db", str(missing)) == 2
    assert not missing.exists()  # not made by looking
    assert run("hazards", "sync", "--db", str(missing)) == 2
    assert not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert run("hazards", "sync", "--db", str(junk)) == 2
    assert run("hazards", "list", "--db", "mysql://x/y") == 2
    assert "--db" in capsys.readouterr().err


def test_an_unreachable_postgres_is_exit_3(capsys):
    assert run("hazards", "list", "--db", "postgresql://nobody@127.0.0.1:1/x") == 3
    assert "unreachable" in capsys.readouterr().err


def test_an_alarm_from_the_stream_becomes_one_hazard_while_the_ingest_runs(
    broker, db_url, ingests, publisher
):
    """The real path: a board's high alarm through mosquitto and the ingest into incidents, then
    sync (twice, and again after the valve reset closed the incident) gives one hazard."""
    # a group of its own: another test run on this machine may hold the default one's lock
    ing = ingests(broker.url, db_url, "--group", "hazards-test-%d" % os.getpid()).start()
    publisher.send(*board_event("site-a", "kitchen-1", "alarm.high", 1, 1, lel=55.0))
    wait_rows(db_url, "SELECT open_event FROM incidents", lambda r: len(r) == 1)
    assert run("hazards", "sync", "--db", db_url) == 0
    assert run("hazards", "sync", "--db", db_url) == 0
    for seq, kind in ((2, "alarm.clear"), (3, "reset")):
        publisher.send(*board_event("site-a", "kitchen-1", kind, 1, seq))
    wait_rows(db_url, "SELECT stage FROM incidents", lambda r: r and r[0]["stage"] == "closed")
    assert run("hazards", "sync", "--db", db_url) == 0
    got = rows(db_url, "SELECT site, subject, kind, severity, status, summary FROM hazards")
    assert got == [{"site": "site-a", "subject": "kitchen-1", "kind": "alarm",
                    "severity": "high", "status": "open",
                    "summary": "high gas alarm, peak 55.0 %LEL"}]  # fmt: skip
    assert ing.stop() == 0
