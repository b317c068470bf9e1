"""Issue 24's gateways page on both backends: what the store keeps of a gateway's status (its
counts, an older gateway's missing ones, the last will's, last seen), and what the page and
/api/gateways show from it with the regulator's own counts (dead letters received, rejected
messages on the unit's topics), trouble first and within the account's scope."""

from __future__ import annotations

import datetime
import json
import re
import time

import pytest
from starlette.testclient import TestClient

from gasguard.protocol import cloudevents
from gasguard.regulator import boundary, views
from gasguard.regulator.store import Rejection, open_store
from gasguard.regulator.web.app import create_console

from .web_fixture import build_console_db, log_in

NOW = time.time()


def _spell(t: float) -> str:
    return boundary.canonical_time(cloudevents.rfc3339(t), "t")


def _status(site: str, online: bool, t: float, devices: int = 0, gw: str = "gw-1",
            **counts) -> tuple[str, bytes]:  # fmt: skip
    ce = cloudevents.gateway_status(site, gw, online, t, "0.9.0", devices, counts or None)
    return cloudevents.topic_gateway_status(site, gw), json.dumps(ce).encode()


def _hostile(site: str, t: float, **data) -> tuple[str, bytes]:
    """A status whose counts are set as given, past what gateway_status would write."""
    topic, raw = _status(site, True, t, 3, outbox=1, refused=0, dead_letters=0)
    ce = json.loads(raw)
    ce["data"].update(data)
    return topic, json.dumps(ce).encode()


def _dead_letter(site: str, n: int, t: float) -> tuple[str, bytes]:
    ce = cloudevents.rejected(site, "gw-1", "dev-00", "event schema: data.lel", b"\xa1", t,
                              "dev-00:%016x:1:%d:rejected" % (0xA001, n))  # fmt: skip
    return cloudevents.topic_rejected(site, "gw-1"), json.dumps(ce).encode()


def _write(store, *messages: tuple[str, bytes]) -> None:
    """Each message as the ingest takes it: checked at the border, or refused into rejected."""
    items = []
    for topic, raw in messages:
        try:
            items.append(boundary.check(topic, raw))
        except boundary.Refused as e:
            items.append(Rejection(topic, str(e), raw))
    store.write(items)


def _row(store, site: str) -> dict:
    return store.rows("SELECT * FROM gateways WHERE site = ? AND gateway = 'gw-1'", (site,))[0]


def test_the_store_keeps_a_gateways_counts_and_when_it_was_last_heard(db_url):
    store = open_store(db_url, create=True)
    try:
        t0, t1, t2 = NOW - 600, NOW - 300, NOW - 60
        _write(store, _status("site-a", True, t1, 3, outbox=5, refused=2, dead_letters=1))
        row = _row(store, "site-a")
        assert (row["online"], row["devices_online"], row["outbox"], row["refused"],
                row["dead_letters"], row["last_seen"]) == (1, 3, 5, 2, 1, _spell(t1))  # fmt: skip
        # the last will: made at connect (older), without counts; they stay what they were
        _write(store, _status("site-a", False, t0))
        row = _row(store, "site-a")
        assert (row["online"], row["outbox"], row["refused"]) == (0, 5, 2)
        assert row["last_seen"] == _spell(t1)  # not moved back by the will's older time
        # an older gateway's online status has no counts: unknown, not the last ones
        _write(store, _status("site-a", True, t2, 4))
        row = _row(store, "site-a")
        assert (row["online"], row["outbox"], row["dead_letters"], row["last_seen"]) == (
            1, None, None, _spell(t2))  # fmt: skip
        # replayed at an ingest restart (retained), or from a clock an hour ahead: last seen
        # neither goes back nor forward
        _write(store, _status("site-a", True, t1, 3, outbox=5, refused=2, dead_letters=1))
        _write(store, _status("site-a", True, NOW + 3600, 3, outbox=6, refused=2, dead_letters=1))
        row = _row(store, "site-a")
        assert row["last_seen"] == _spell(t2) and row["outbox"] == 6
        # a hostile count is refused into rejected, counted under the topic's site
        _write(store, _hostile("site-a", t2, outbox=-1), _hostile("site-a", t2, outbox=2**40))
        rej = store.rows("SELECT site, reason FROM rejected ORDER BY reason")
        assert [r["site"] for r in rej] == ["site-a", "site-a"]
        assert all("outbox" in r["reason"] for r in rej)
        assert _row(store, "site-a")["outbox"] == 6  # the refused ones changed nothing
    finally:
        store.close()


@pytest.fixture
def console(db_url):
    """The console's small city (web_fixture), every gateway offline in it, and then: statuses
    for some of its gateways, dead letters and a rejected status from site-0001's."""
    build_console_db(db_url)
    store = open_store(db_url)
    try:
        _write(
            store,
            _status("site-0000", True, NOW - 30, 2, outbox=900, refused=0, dead_letters=0),
            _status("site-0001", True, NOW - 20, 9, outbox=40, refused=3, dead_letters=2),
            _status("site-0003", True, NOW - 40, 9),  # an older gateway: no counts
            _status("site-0005", False, NOW - 50, outbox=7, refused=1, dead_letters=0),  # stopped
            _dead_letter("site-0001", 1, NOW - 25),
            _dead_letter("site-0001", 2, NOW - 24),
            _hostile("site-0001", NOW - 10, outbox="40"),  # a string: rejected
        )
    finally:
        store.close()
    with TestClient(create_console(db_url)) as client:
        yield client


@pytest.fixture
def user(console):
    made = []

    def make(name: str) -> TestClient:
        c = TestClient(console.app)
        c.__enter__()
        made.append(c)
        assert log_in(c, name).status_code == 303
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


def test_the_gateways_page_and_api_show_trouble_first_with_the_counts_in_scope(user):
    chen = user("chen")  # the city's account
    g = chen.get("/api/gateways").json()
    order = [x["site"] for x in g["gateways"]]
    # offline first (the deepest known outbox first), then online by depth (unknown last)
    assert order == ["site-0005", "site-0002", "site-0004", "site-0006", "site-0007",
                     "site-0000", "site-0001", "site-0003"]  # fmt: skip
    by = {x["site"]: x for x in g["gateways"]}
    one = by["site-0001"]
    assert (one["online"], one["outbox"], one["refused"], one["dead_letters"]) == (True, 40, 3, 2)
    assert one["dead_letters_stored"] == 2  # the regulator holds both
    # build_city's junk on site-0001's device topic (3 times) and the status refused above
    assert (one["rejected"], one["rejected_messages"]) == (2, 4)
    assert one["last_seen"] == _spell(NOW - 20)
    assert by["site-0003"]["outbox"] is None and by["site-0003"]["rejected"] == 0
    assert (by["site-0005"]["online"], by["site-0005"]["outbox"]) == (False, 7)
    # no status with a time yet: last seen is when a board of its unit was last heard
    assert by["site-0004"]["last_seen"] == "2026-11-30T08:00:00.000Z"
    assert chen.get("/api/gateways", params={"state": "offline"}).json()["total"] == 5

    page = chen.get("/gateways").text
    assert re.findall(r'data-site="([^"]+)"', page) == order
    assert "<th>待发队列</th>" in page and "<th>平台拒收</th>" in page
    row = re.search(r'<tr[^>]*data-site="site-0001".*?</tr>', page).group(0)
    cells = dict(re.findall(r'<td class="([a-z-]+)">([^<]*)</td>', row))
    assert cells == {"outbox": "40", "refused": "3", "dead": "2", "dead-stored": "2",
                     "rejected": "2", "last-seen": _local(NOW - 20)}  # fmt: skip
    older = re.search(r'<tr[^>]*data-site="site-0003".*?</tr>', page).group(0)
    assert '<td class="outbox">—</td>' in older
    assert "<th>Outbox</th>" in chen.get("/lang/en?next=/gateways").text

    tom = user("tom")  # a street's account (xuhui-tianping): site-0001's unit only
    g = tom.get("/api/gateways").json()
    assert g["total"] == 1 and [x["site"] for x in g["gateways"]] == ["site-0001"]
    assert g["gateways"][0]["rejected"] == 2 and g["gateways"][0]["dead_letters_stored"] == 2
    page = tom.get("/gateways").text
    assert re.findall(r'data-site="([^"]+)"', page) == ["site-0001"]
    for other in ("site-0000", "site-0003", "site-0005"):
        assert other not in page
    assert tom.get("/api/sites/site-0001").json()["gateways"][0]["outbox"] == 40


def _local(t: float) -> str:
    """As the page shows a stored time: in the console's default zone (Asia/Shanghai)."""
    at = datetime.datetime.fromisoformat(_spell(t).replace("Z", "+00:00"))
    return at.astimezone(datetime.timezone(datetime.timedelta(hours=8))).strftime(
        "%Y-%m-%d %H:%M:%S")  # fmt: skip


def test_an_empty_store_has_no_gateways(db_url):
    """views.gateways itself (what `regulator api` serves): nothing to count, no query fails."""
    store = open_store(db_url, create=True)
    try:
        assert views.gateways(store, views.Filters(state="all"), "all", 10) == {
            "total": 0, "gateways": []}  # fmt: skip
    finally:
        store.close()
