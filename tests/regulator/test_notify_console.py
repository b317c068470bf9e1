"""The console's workflow hands real alarms to forwarding (regulator/notify/hooks.py, issue 25):
`serve --notify-config` passes the hooks; what the upper platform would be sent is the outbox's
forward rows. A real alarm goes with its hazard dispatched, the hazard again when a
re-inspection closes it; a false alarm goes nowhere. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from gasguard.regulator.notify import config
from gasguard.regulator.notify.hooks import console_hooks

from .test_web_workorders import (
    EV0,
    arrived_with_photo,
    dispatched,
    logged_in_users,
    q,
    triage_form,
)

NOTIFY = """
base_url = "https://console.example.gov.cn"
[channels.city]
type = "forward"
url = "http://127.0.0.1:9/forward"
hmac_secret_env = "T_FWD_SECRET"
[forward]
channels = ["city"]
"""


@pytest.fixture
def console(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("T_FWD_SECRET", "fwdsecret")
    (tmp_path / "notify.toml").write_text(NOTIFY)
    on_confirmed, on_closed = console_hooks(config.load(tmp_path / "notify.toml"))
    with logged_in_users(db_url, tmp_path, on_confirmed=on_confirmed,
                         on_closed=on_closed) as user:  # fmt: skip
        yield user, db_url


def forwarded(db: str) -> list[dict]:
    rows = q(db, "SELECT channel, subject, body FROM notify_outbox WHERE kind = 'forward' "
                 "ORDER BY created_at, key")  # fmt: skip
    return [{"channel": r["channel"], **json.loads(r["body"])["payload"]} for r in rows]


def test_a_real_alarm_is_forwarded_with_its_hazard_and_again_when_it_is_closed(console):
    user, db = console
    alice, bob = user("alice"), user("bob")
    wo = dispatched(alice)
    sent = forwarded(db)
    assert [(f["type"], f.get("hazard", {}).get("status")) for f in sent] == [
        ("alarm", None), ("hazard", "dispatched")]
    assert sent[0]["alarm"]["verdict"] == "real" and sent[0]["site"] == "site-0000"
    assert {f["channel"] for f in sent} == {"city"}
    arrived_with_photo(bob, wo)
    assert bob.post("/workorders/%d/report" % wo,
                    data={"csrf": bob.token, "result": "阀门更换"}).status_code == 200
    chen = user("chen")
    r = chen.post("/workorders/%d/reinspect" % wo, data={"csrf": chen.token, "outcome": "pass"})
    assert r.status_code == 200, r.text[-800:]
    closed = forwarded(db)[-1]
    assert closed["type"] == "hazard" and closed["hazard"]["status"] == "closed"
    assert len(forwarded(db)) == 3


def test_a_false_alarm_is_not_forwarded(console):
    user, db = console
    alice = user("alice")
    r = alice.post("/triage", data=triage_form(alice, EV0, verdict="false", to=None,
                                               deadline=None))  # fmt: skip
    assert r.status_code in (200, 303), r.text[-800:]
    assert q(db, "SELECT verdict FROM alarm_triage") == [{"verdict": "false"}]
    assert forwarded(db) == []


def test_a_real_work_order_past_its_deadline_escalates_once(db_url, monkeypatch):
    """The ledger's own work orders (regulator/workorders.py), not a stand-in: dispatched with a
    deadline, nothing before it, the workorder chain's first step once past it, and once."""
    import datetime

    from gasguard.regulator import hazards, workorders
    from gasguard.regulator.notify import escalate, outbox

    from .test_notify import DEV, SITE, alarm, make_store, toml

    monkeypatch.setenv("T_FWD_SECRET", "x")
    for name in ("T_WECOM_KEY", "T_ROBOT_SECRET", "T_SMS_TOKEN"):
        monkeypatch.setenv(name, "x")
    chain = '[escalation.workorder]\nsteps = [{after = "0s", roles = ["grid"]}]\n'
    cfg = config.parse(toml({n: "http://127.0.0.1:9/" + n for n in
                             ("wecom", "ding", "feishu", "sms", "forward")}, chain=chain))
    store = make_store(db_url)
    try:
        alarm(store)
        (inc,) = store.rows("SELECT open_event FROM incidents")
        t0 = datetime.datetime.now(datetime.UTC)
        at = outbox._at(t0)
        with store.transaction():
            h = hazards.for_incident(store, SITE, DEV, inc["open_event"], at)
        deadline = t0 + datetime.timedelta(hours=2)
        wo = workorders.dispatch(store, h["id"], "王师傅", outbox._at(deadline), "alice", at)

        def told() -> int:
            return store.x("SELECT COUNT(*) FROM notify_outbox WHERE kind = 'workorder' AND "
                           "subject = ?", ("workorder:%d" % wo["id"],)).fetchone()[0]  # fmt: skip

        escalate.tick(store, cfg, deadline - datetime.timedelta(seconds=1))
        assert told() == 0  # not overdue yet
        escalate.tick(store, cfg, deadline + datetime.timedelta(seconds=1))
        first = told()
        assert first > 0
        escalate.tick(store, cfg, deadline + datetime.timedelta(seconds=2))
        assert told() == first  # a step fires once
    finally:
        store.close()
