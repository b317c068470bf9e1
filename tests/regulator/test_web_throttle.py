"""Login throttling, attacked (regulator/web/throttle.py): wrong passwords in a loop, many names
from one address, one name from many addresses, unicode and huge names. What a person sees: a
401 for a wrong password, then a 429 that says until when, while the real user's own browser
(its device cookie) and other addresses still get in; each lock an audit row."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gasguard.regulator import audit
from gasguard.regulator.store import open_store
from gasguard.regulator.web.throttle import LIMITS

from .test_web_console import console  # noqa: F401 - the fixture
from .web_fixture import PASSWORD, log_in

WRONG = "not the password"


@pytest.fixture
def client_at(console):  # noqa: F811
    """A browser at a client address of its own (its own cookies)."""
    made = []

    def make(address: str) -> TestClient:
        c = TestClient(console.app, client=(address, 40000))
        c.__enter__()
        made.append(c)
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


def lockouts(db_url: str) -> list[dict]:
    store = open_store(db_url)
    try:
        return [e for e in audit.entries(store) if e["action"] == "login.lockout"]
    finally:
        store.close()


def test_wrong_passwords_in_a_loop_lock_that_name_at_that_address_only(client_at, db_url):
    attacker = client_at("203.0.113.7")
    for _ in range(LIMITS["pair"] - 1):
        r = log_in(attacker, "alice", WRONG)
        assert r.status_code == 401 and "用户名或密码错误" in r.text
    r = log_in(attacker, "alice", WRONG)  # the fifth
    assert r.status_code == 429 and "登录失败次数过多" in r.text
    assert 850 <= int(r.headers["retry-after"]) <= 900  # 15 minutes
    r = log_in(attacker, "alice", PASSWORD)  # even the right password: refused, not tried
    assert r.status_code == 429 and "登录失败次数过多" in r.text
    assert log_in(attacker, "bob", PASSWORD).status_code == 303  # another name: not locked
    # the real alice, elsewhere, is not locked out
    assert log_in(client_at("198.51.100.20"), "alice", PASSWORD).status_code == 303
    (lock,) = lockouts(db_url)
    assert lock["actor"] == "system:login" and lock["target"] == "login:alice"
    assert lock["after"]["lock"] == "pair" and lock["after"]["client"] == "203.0.113.7"
    assert lock["after"]["failures"] == LIMITS["pair"]
    # the lock ends: 15 minutes on, the right password works again
    store = open_store(db_url)
    with store.transaction():
        store.x("UPDATE login_locks SET until = '2000-01-01T00:00:00.000Z'")
        store.x("UPDATE login_failures SET at = '2000-01-01T00:00:00.000Z'")
    store.close()
    assert log_in(attacker, "alice", PASSWORD).status_code == 303


def test_many_names_from_one_address_lock_that_address(client_at, db_url):
    sprayer = client_at("203.0.113.8")
    names = ["user%02d" % n for n in range(LIMITS["client"])]  # one try each: no pair locks
    for name in names[:-1]:
        assert log_in(sprayer, name, WRONG).status_code == 401
    assert log_in(sprayer, names[-1], WRONG).status_code == 429
    assert log_in(sprayer, "chen", PASSWORD).status_code == 429  # the address is paused
    assert log_in(client_at("198.51.100.21"), "chen", PASSWORD).status_code == 303
    (lock,) = lockouts(db_url)
    assert lock["target"] == "client:203.0.113.8" and lock["after"]["lock"] == "client"


def test_one_name_from_many_addresses_spares_the_users_own_browser(client_at, db_url):
    own = client_at("198.51.100.30")
    assert log_in(own, "alice", PASSWORD).status_code == 303  # her browser: a device cookie
    assert own.cookies.get("gasguard_device")
    own.post("/logout", data={"csrf": _csrf(own)})
    for n in range(LIMITS["account"]):
        r = log_in(client_at("203.0.113.%d" % (100 + n)), "alice", WRONG)
    assert r.status_code == 429
    assert log_in(client_at("192.0.2.1"), "alice", PASSWORD).status_code == 429
    assert log_in(own, "alice", PASSWORD).status_code == 303  # still gets in
    # bob's device cookie, or a forged one, is no pass for alice
    bobs = client_at("192.0.2.2")
    assert log_in(bobs, "bob", PASSWORD).status_code == 303
    bobs.post("/logout", data={"csrf": _csrf(bobs)})
    assert log_in(bobs, "alice", PASSWORD).status_code == 429
    forged = client_at("192.0.2.3")
    forged.cookies.set("gasguard_device", own.cookies.get("gasguard_device")[:-4] + "AAAA")
    assert log_in(forged, "alice", PASSWORD).status_code == 429
    assert [e["after"]["lock"] for e in lockouts(db_url)] == ["account"]


def test_unicode_huge_and_broken_names_are_counted_not_crashed_on(client_at, db_url):
    attacker = client_at("2001:db8::1")
    for name in ("alice", "ＡＬＩＣＥ", "Alice", " alice"):  # one name to the counter
        assert log_in(attacker, name, WRONG).status_code == 401, name
    # the same /64 is the same client: a new address in it does not start afresh
    assert log_in(client_at("2001:db8::2"), "ALICE", WRONG).status_code == 429
    assert log_in(client_at("2001:db8:0:1::1"), "alice", PASSWORD).status_code == 303
    odd = client_at("192.0.2.50")
    for name in ("x" * 1_000_000, "a\x00b", "\u202eevil", "李" * 65):
        r = log_in(odd, name, WRONG)
        assert r.status_code == 401 and "用户名或密码错误" in r.text, name[:10]
    r = odd.post("/login", content=b"name=%FF%FE%ED%A0%80&password=x&csrf=" + _csrf(odd).encode(),
                 headers={"content-type": "application/x-www-form-urlencoded"})  # not UTF-8
    assert r.status_code == 401
    store = open_store(db_url)
    longest = store.x("SELECT max(length(name)), max(length(client)) FROM login_failures")
    longest = longest.fetchone()
    store.close()
    assert longest[0] <= 64 and longest[1] <= 64


def _csrf(client: TestClient) -> str:
    from .web_fixture import csrf_in

    return csrf_in(client.get("/alarms").text)
