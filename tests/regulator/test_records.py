"""Commissioning records at the regulator (issue 26), on SQLite and PostgreSQL: each message on a
device's commissioning topic through the ingest's boundary and store as the ingest takes it; the
installer registry and its command; what counts, what is refused and why; compliance on the
record's geometry and bump tests; the unit page and the JSON API."""

from __future__ import annotations

import base64
import copy
import datetime
import json

import pytest
from starlette.testclient import TestClient

from gasguard.protocol import cloudevents
from gasguard.protocol import record as rec
from gasguard.regulator import audit, boundary, compliance, installers, records
from gasguard.regulator.store import Rejection, now, open_store
from gasguard.regulator.web import accounts
from gasguard.regulator.web.app import create_console
from gasguard.tools.cli import main as cli
from tests.commissioning import Installer, signed, unsigned

from .city_registry import NODES
from .web_fixture import PASSWORD, log_in

SITE, DEV = "site-9", "kitchen-1"


def envelope(record, site=SITE, device=DEV, gateway="gw-1") -> tuple[str, bytes]:
    """As the gateway publishes it (gateway/service.py)."""
    try:
        digest = rec.digest(record)
    except rec.RecordError:
        digest = "0" * 64
    ce = cloudevents.commissioning(site, device, gateway, record, digest, 1764500000)
    raw = json.dumps(ce).encode()  # ASCII: a lone surrogate goes as its JSON escape
    return cloudevents.topic_commissioning(site, device), raw


def deliver(store, topic: str, raw: bytes) -> None:
    """One message as an ingest worker takes it: the boundary, then one batch."""
    try:
        item = boundary.check(topic, raw)
    except boundary.Refused as e:
        item = Rejection(topic, str(e), raw)
    store.write([item])


def register(store, who: Installer, by: str = "admin") -> None:
    installers.add(store, now(), by, who.name, who.company, who.certificate, who.public_raw)


def kept(store, device: str = DEV) -> list[dict]:
    return store.rows("SELECT * FROM commissioning_records WHERE site = ? AND device = ? "
                      "ORDER BY received_at, digest", (SITE, device))  # fmt: skip


@pytest.fixture
def store(db_url):
    s = open_store(db_url, create=True)
    with s.transaction():
        for n in NODES:
            s.x("INSERT INTO nodes (id, parent, level, name) VALUES (?, ?, ?, ?)", n)
        s.x("INSERT INTO units (site, name, address, gas, responsible, phone, node) VALUES "
            "(?, ?, ?, 'ng', ?, ?, ?)", (SITE, "老王火锅", "文三路 1 号", "王五", "021-0000",
                                         "xuhui-tianping-g3"))  # fmt: skip
        for dev in ("kitchen-1", "kitchen-2"):
            s.x("INSERT INTO unit_devices (site, device) VALUES (?, ?)", (SITE, dev))
    yield s
    s.close()


def test_a_record_signed_by_a_registered_installer_counts_for_its_device(store):
    who = Installer()
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who, close_ms=1840)))
    (row,) = kept(store)
    assert row["status"] == "accepted" and row["reason"] is None
    assert row["high_to_closed_ms"] == 1840 and row["installer"] == "张三"
    assert records.current(store, [SITE])[(SITE, DEV)]["digest"] == row["digest"]
    (entry,) = [e for e in audit.entries(store) if e["action"].startswith("commissioning")]
    assert entry["action"] == "commissioning.accepted"
    assert entry["target"] == "commissioning:%s/%s" % (SITE, DEV)


def _resign_value(r, n):
    return dict(r, signature=dict(r["signature"], value=base64.b64encode(b"x" * n).decode()))


def _by_stranger(r):
    x = Installer()
    return x.sign(dict(r, installer=dict(r["installer"], key_id=x.key_id)))


HOSTILE = {
    # name: (make the record from a signed one and its installer, words the reason holds)
    "altered after signing": (
        lambda r, w: dict(r, bump_tests=[dict(r["bump_tests"][0], high_to_closed_ms=900)]),
        "altered after signing"),
    "unsigned": (lambda r, w: {k: v for k, v in r.items() if k != "signature"}, "unsigned"),
    "wrong alg": (lambda r, w: dict(r, signature=dict(r["signature"], alg="ecdsa")),
                  "algorithm 'ecdsa'"),
    "bad base64": (lambda r, w: dict(r, signature=dict(r["signature"], value="!!!")),
                   "value is not base64"),
    "short signature": (lambda r, w: _resign_value(r, 10), "value is 10 bytes, not 64"),
    "short key": (lambda r, w: dict(r, signature=dict(r["signature"], public_key="AAAA")),
                  "public_key is 3 bytes, not 32"),
    "key id": (lambda r, w: dict(r, signature=dict(r["signature"], key_id="ab" * 8)),
               "key_id does not match"),
    "unregistered key": (lambda r, w: _by_stranger(r), "which no registered installer"),
    "key not the named one": (lambda r, w: Installer().sign(r), "but the record names the"),
    "other device": (lambda r, w: w.sign(dict(r, device="kitchen-2")),
                     "device kitchen-2, but came on the topic of site site-9, device kitchen-1"),
    "other site": (lambda r, w: w.sign(dict(r, site="site-1")), "is for site site-1"),
    "schema": (lambda r, w: w.sign(dict(r, verdict="GOOD")), "record.verdict"),
    "a float": (lambda r, w: dict(r, bump_tests=[dict(r["bump_tests"][0], peak_tenths=52.0)]),
                "a float"),
    "big integer": (lambda r, w: dict(r, peak=2**64), "beyond 2^53"),
    "dated ahead": (lambda r, w: w.sign(dict(r, finished_at="2099-01-01T00:00:00Z")),
                    "is in the future"),
    "another certificate": (lambda r, w: w.sign(dict(r, installer=dict(r["installer"],
                            certificate="FAKE-1"))), "names certificate 'FAKE-1'"),  # fmt: skip
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_record_is_kept_refused_with_its_reason_and_never_counts(store, case):
    who = Installer()
    register(store, who)
    make, why = HOSTILE[case]
    deliver(store, *envelope(make(signed(SITE, DEV, who), who)))
    (row,) = kept(store)
    assert row["status"] == "refused", row
    assert why in row["reason"], row["reason"]
    assert records.current(store, [SITE]) == {}
    assert any(e["action"] == "commissioning.refused" for e in audit.entries(store))


def test_a_revoked_key_refuses_new_records_and_leaves_the_accepted_one(store, tmp_path):
    who = Installer()
    register(store, who)
    first = signed(SITE, DEV, who, finished="2026-11-29T10:20:00Z")
    deliver(store, *envelope(first))
    installers.revoke(store, now(), "admin", who.key_id, "laptop stolen")
    deliver(store, *envelope(signed(SITE, DEV, who, finished="2026-11-30T10:20:00Z")))
    rows = {r["status"]: r for r in kept(store)}
    why = rows["refused"]["reason"]
    assert "revoked at" in why and "laptop stolen" in why
    assert records.current(store, [SITE])[(SITE, DEV)]["digest"] == rec.digest(first)


def test_a_replayed_older_record_and_a_duplicate_do_not_replace_the_newer(store):
    who = Installer()
    register(store, who)
    old = signed(SITE, DEV, who, finished="2026-11-01T10:00:00Z", close_ms=3000)
    new = signed(SITE, DEV, who, finished="2026-11-30T10:00:00Z", close_ms=1500)
    deliver(store, *envelope(new))
    deliver(store, *envelope(old))  # a replay: valid, but it finished before the newer
    deliver(store, *envelope(new))  # the gateway sends its newest again at each connect
    rows = kept(store)
    assert len(rows) == 2 and all(r["status"] == "accepted" for r in rows)
    counting = records.current(store, [SITE])[(SITE, DEV)]
    assert counting["high_to_closed_ms"] == 1500 and counting["times"] == 2
    listed = records.for_site(store, SITE)
    assert [(r["counts"], r["superseded"]) for r in listed] == [(True, False), (False, True)]


def test_a_record_refused_for_an_unknown_key_counts_once_the_installer_is_registered(store):
    who = Installer()
    record = signed(SITE, DEV, who)
    deliver(store, *envelope(record))
    assert kept(store)[0]["status"] == "refused"
    register(store, who)
    deliver(store, *envelope(record))  # the gateway's next connect
    (row,) = kept(store)
    assert row["status"] == "accepted" and row["times"] == 2


@pytest.mark.parametrize("raw, why", [
    (b"[1, 2, 3]", "json: not an object"),
    (b'{"specversion": NaN}', "NaN is not JSON"),
    (b"{" * 40 + b"}" * 40, "nested deeper"),
    (b'{"x": "' + b"a" * (boundary.RECORD_MAX_BYTES + 1) + b'"}', "size:"),
    (b"\xff\xfe", "not UTF-8"),
])  # fmt: skip
def test_what_is_not_a_record_envelope_goes_to_rejected_with_its_reason(store, raw, why):
    deliver(store, cloudevents.topic_commissioning(SITE, DEV), raw)
    assert kept(store) == []
    (r,) = store.rows("SELECT * FROM rejected")
    assert why in r["reason"], r["reason"]


def test_an_envelope_that_disagrees_with_its_topic_or_schema_is_rejected(store):
    who = Installer()
    topic, raw = envelope(signed(SITE, DEV, who))
    ce = json.loads(raw)
    wrong = copy.deepcopy(ce)
    wrong["data"]["device"] = "kitchen-2"
    extra = copy.deepcopy(ce)
    extra["data"]["note"] = "x"
    deliver(store, topic, json.dumps(wrong).encode())
    deliver(store, topic, json.dumps(extra).encode())
    reasons = sorted(r["reason"] for r in store.rows("SELECT reason FROM rejected"))
    assert "but the topic's device is 'kitchen-1'" in reasons[0] + reasons[1]
    assert any("schema" in r for r in reasons)
    assert kept(store) == []


def test_what_a_database_cannot_hold_in_a_record_is_shown_not_a_failed_batch(store):
    stranger = Installer(name="nul\x00 name", company="\x00")
    deliver(store, *envelope(signed(SITE, DEV, stranger)))
    lone = unsigned(SITE, "kitchen-2", stranger)  # not even signable: no UTF-8 for it
    lone["installer"] = dict(lone["installer"], name="\ud800 surrogate")
    deliver(store, *envelope(lone, device="kitchen-2"))
    (row,) = kept(store)
    assert row["status"] == "refused" and row["installer"] == "nul\\0 name"
    (row,) = kept(store, "kitchen-2")
    assert row["status"] == "refused" and row["installer"] == "? surrogate"
    assert store.rows("SELECT * FROM rejected") == []


def test_a_refused_records_close_time_beyond_a_bigint_is_kept_refused_not_a_failed_batch(store):
    """The columns of a refused record come from a record nobody vouched for: a close time of
    2^70 ms (or -2^70) must not fail the INSERT and drop the record from its unit's page."""
    who = Installer()
    register(store, who)
    for dev, ms in (("kitchen-1", 2**70), ("kitchen-2", -(2**70))):
        r = unsigned(SITE, dev, who)
        r["bump_tests"] = [dict(r["bump_tests"][0], high_to_closed_ms=ms)]
        deliver(store, *envelope(r, device=dev))
        (row,) = kept(store, dev)
        assert row["status"] == "refused" and row["high_to_closed_ms"] is None
    assert store.rows("SELECT * FROM rejected") == []


def test_a_flood_of_refused_records_on_the_sites_topics_hides_no_counting_record(store):
    """Anyone with the site's broker login can publish refused records (20 is the page's
    limit) on a device topic that sorts first: the unit's counting record must still show."""
    who = Installer()
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who)))
    for _ in range(25):
        deliver(store, *envelope(unsigned(SITE, "aaa", who), device="aaa"))
    listed = records.for_site(store, SITE)
    assert [(r["device"], r["status"]) for r in listed if r["counts"]] == [(DEV, "accepted")]
    assert "payload" not in listed[-1]


@pytest.mark.parametrize("clock", [0, 4200000000])
def test_a_record_a_gateway_took_with_its_clock_wrong_is_still_judged(store, clock):
    """The envelope's time is when the gateway took the record (records.sqlite keeps it: the
    same at every send). A site box that took it before its clock was set (1970) carried it
    to `rejected` at every connect, for ever; the record's own signed times are what count."""
    who = Installer()
    register(store, who)
    record = signed(SITE, DEV, who)
    ce = cloudevents.commissioning(SITE, DEV, "gw-1", record, rec.digest(record), clock)
    deliver(store, cloudevents.topic_commissioning(SITE, DEV), json.dumps(ce).encode())
    assert store.rows("SELECT reason FROM rejected") == []
    (row,) = kept(store)
    assert row["status"] == "accepted"


@pytest.mark.parametrize("finished", ["0001-01-01", "0001-01-01T00:00:00", "9999-12-31"])
def test_a_refused_records_finish_time_no_clock_can_hold_is_kept_refused(store, finished):
    """A refused record's finish time is read for its row whatever its spelling: a naive year 1
    raised ValueError out of the boundary's calendar (year 0 is out of range), failing the row
    into `rejected` instead of the unit's page."""
    who = Installer()
    register(store, who)
    deliver(store, *envelope(who.sign(unsigned(SITE, DEV, who, finished=finished))))
    (row,) = kept(store)
    assert row["status"] == "refused" and row["finished_at"] is None
    assert store.rows("SELECT * FROM rejected") == []


def test_endless_distinct_refused_records_from_a_sites_login_do_not_grow_the_ledger(
    store, monkeypatch
):
    """`rejected` keeps a bounded number of short excerpts; a refused record was kept whole (up
    to 320 KiB) with an audit row each, without end: anyone with one site's broker login could
    fill the city's database. Past the site's share they go to `rejected`, counted."""
    monkeypatch.setattr(records, "REFUSED_PER_SITE", 5, raising=False)
    who = Installer()
    register(store, who)
    for n in range(8):
        deliver(store, *envelope(unsigned(SITE, "x%d" % n, who), device="x%d" % n))
    deliver(store, *envelope(signed(SITE, DEV, who)))  # a real one still counts
    kept_rows = store.rows("SELECT status FROM commissioning_records WHERE site = ?", (SITE,))
    assert sorted(r["status"] for r in kept_rows) == ["accepted"] + ["refused"] * 5
    over = store.rows("SELECT reason FROM rejected")
    assert len(over) == 3 and all("refused records kept" in r["reason"] for r in over)
    assert records.current(store, [SITE])[(SITE, DEV)]["status"] == "accepted"


# --- compliance --------------------------------------------------------------------------------


def findings(store) -> dict[tuple[str, str], str]:
    compliance.evaluate(store, sites=[SITE])
    return {(r["subject"], r["kind"]): r["detail"] for r in store.rows(
        "SELECT * FROM findings WHERE site = ? AND cleared_at IS NULL", (SITE,))}  # fmt: skip


def test_compliance_judges_a_device_on_its_counting_records_geometry_and_bump_tests(store):
    with store.transaction():  # the district's import placed the detector too low for gas
        store.x("INSERT INTO unit_detectors (site, device, address, gas, mount_height_m, "
                "ceiling_m, distance_m, above_appliance) VALUES (?,?,1,'methane',0.3,3.0,2.0,0)",
                (SITE, DEV))  # fmt: skip
    assert (DEV, "wrong_position") in findings(store)
    who = Installer()
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who, finished="2026-11-01T10:00:00Z")))
    assert (DEV, "wrong_position") not in findings(store)  # measured on site: 2.7 m, near ceiling
    # a newer record: a propane detector past its life, and the bump test failed
    bad = unsigned(SITE, DEV, who, finished="2026-11-30T10:00:00Z", gas="propane",
                   verdict="FAIL", bump_result="fail")
    bad["equipment"]["detectors"][0]["end_of_life"] = "2020-01-01"
    deliver(store, *envelope(who.sign(bad)))
    got = findings(store)
    assert "propane" in got[(DEV, "wrong_gas")]
    nw = got[(DEV, "not_working")]
    assert "verdict FAIL" in nw and "bump test of detector 1: fail" in nw
    assert "past its service life (ended 2020-01-01)" in nw


def test_an_incomplete_commissioning_is_a_finding(store):
    who = Installer()
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who, verdict="INCOMPLETE", bump_tests=[])))
    nw = findings(store)[(DEV, "not_working")]
    assert "verdict INCOMPLETE" in nw and "no bump test" in nw


def test_a_record_made_without_the_boards_log_head_is_accepted_as_incomplete(store):
    """`gasguard commission` writes event_log_head null (and INCOMPLETE, never PASS) when it
    could not read the board's log: a signed, honest record, kept and counted as incomplete,
    not refused as if forged."""
    who = Installer()
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who, verdict="INCOMPLETE",
                                    event_log_head=None)))  # fmt: skip
    (row,) = kept(store)
    assert row["status"] == "accepted" and row["verdict"] == "INCOMPLETE", row
    assert "verdict INCOMPLETE" in findings(store)[(DEV, "not_working")]


def test_a_counting_records_whole_number_too_big_for_a_float_stops_no_evaluation(store):
    """install is free-form in the schema: a signed ceiling of 10**400 metres (or one held from
    before the seam refused such numbers) must not raise out of compliance, whose sweep judges
    every unit in one run: one record would stop the city's findings."""
    payload = unsigned(SITE, DEV, Installer())
    payload["install"]["ceiling_m"] = 10**400
    payload["install"]["detectors"][0]["mount_height_m"] = -(10**400)
    (d,) = compliance.record_detectors(DEV, payload, [])
    assert d.get("ceiling_m") is None and d.get("mount_height_m") is None


# --- the unit page and the API -----------------------------------------------------------------


@pytest.fixture
def console(db_url, store):
    accounts.add(store, "chen", "admin", "sh", PASSWORD, "test", now())
    accounts.add(store, "min", "viewer", "minhang", PASSWORD, "test", now())
    with TestClient(create_console(db_url)) as c:
        yield c


def test_the_unit_page_says_commissioned_with_the_valve_close_time_and_refusals_why(
    store, console
):
    who = Installer(name="<script>alert(1)</script>", company="<b>co</b>")
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who, close_ms=1840)))
    tampered = dict(signed(SITE, "kitchen-2", who), verdict="PASS")
    tampered["bump_tests"] = [dict(tampered["bump_tests"][0], high_to_closed_ms=10)]
    deliver(store, *envelope(tampered, device="kitchen-2"))
    assert log_in(console, "chen").status_code == 303
    zh = console.get("/units/%s" % SITE).text
    table = zh[zh.index('id="commissioning"'):]
    assert "已调试" in table and "1840 毫秒" in table and "合格" in table
    assert "已拒收" in table and "签名后被篡改" in table and "altered after signing" in table
    assert "<script>alert(1)</script>" not in zh and "&lt;script&gt;" in zh
    assert "<b>co</b>" not in zh
    console.get("/lang/en", follow_redirects=False)
    en = console.get("/units/%s" % SITE).text
    assert "commissioned" in en and "1840 ms" in en and "refused" in en
    api = console.get("/api/sites/%s" % SITE).json()
    got = {(c["device"], c["status"], c["counts"]) for c in api["commissioning"]}
    assert got == {(DEV, "accepted", True), ("kitchen-2", "refused", False)}


def test_another_districts_account_sees_neither_the_page_nor_its_records(store, console):
    who = Installer()
    register(store, who)
    deliver(store, *envelope(signed(SITE, DEV, who)))
    assert log_in(console, "min").status_code == 303
    assert console.get("/units/%s" % SITE).status_code == 404
    assert console.get("/api/sites/%s" % SITE).status_code in (403, 404)


# --- the installer command ---------------------------------------------------------------------


def test_the_installer_command_registers_lists_and_revokes_with_an_audit_trail(
    db_url, store, tmp_path, capsys
):
    who = Installer()
    pub = tmp_path / "installer.pub"
    pub.write_text(base64.b64encode(who.public_raw).decode() + "\n")
    add = ["regulator", "installer", "add", "--db", db_url, "--name", "张三",
           "--company", "安装公司", "--certificate", who.certificate, "--public-key", str(pub),
           "--by", "admin"]  # fmt: skip
    assert cli(add) == 0
    assert who.key_id in capsys.readouterr().out
    assert cli(add) == 2  # the same key twice
    assert "already registered" in capsys.readouterr().err
    priv = tmp_path / "installer.key"
    priv.write_bytes(who.pem)
    assert cli(add[:-4] + ["--public-key", str(priv), "--by", "admin"]) == 2
    assert "not the public key" in capsys.readouterr().err
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    assert cli(add[:-4] + ["--public-key", str(junk), "--by", "admin"]) == 2
    assert cli(["regulator", "installer", "list", "--db", db_url, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["key_id"] == who.key_id and listed["revoked_at"] is None
    assert cli(["regulator", "installer", "revoke", who.key_id, "--db", db_url, "--reason",
                "certificate withdrawn", "--by", "admin"]) == 0  # fmt: skip
    assert cli(["regulator", "installer", "revoke", "0" * 16, "--db", db_url, "--reason", "x",
                "--by", "admin"]) == 2  # fmt: skip
    acts = [e["action"] for e in audit.entries(store, "installer:" + who.key_id)]
    assert acts == ["installer.add", "installer.revoke"]
    deliver(store, *envelope(signed(SITE, DEV, who)))
    assert "revoked" in kept(store)[0]["reason"]
    assert datetime.date.today()  # the revocation is dated by the ledger's clock


def test_every_refusal_kind_and_verdict_the_unit_page_shows_is_in_the_chinese_catalog():
    from babel.messages.pofile import read_po

    from gasguard.regulator.web import i18n

    with open(i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f, locale="zh_CN")
    have = {(m.context, m.id) for m in catalog if m.id and m.string}
    wanted = {(None, k) for _, k in records.REASON_KINDS} | {(None, records.reason_kind(None))}
    wanted |= {("verdict", v) for v in ("PASS", "FAIL", "INCOMPLETE")}
    assert sorted(wanted - have, key=str) == []
