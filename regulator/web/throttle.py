"""Failed logins are counted and, past a limit, refused for a while (OWASP's "device cookie"
scheme, so that an attacker cannot lock a real user out by typing their name):

- one name from one client address: 5 failures in 15 minutes lock that pair for 15 minutes;
- one client address, any names (password spraying): 20 failures lock that address;
- one name from every address without its device cookie (a spread-out attack): 20 failures
  lock that name for such clients;
- a browser that logged in to that account before carries a signed device cookie for it: it
  is counted on its own (5 failures lock that cookie) and none of the locks above stop it. The
  real user's usual browser still gets in while the name is under attack from elsewhere.

An IPv6 client counts by its /64 (one host holds the whole prefix). A refused attempt costs no
password hash and is not counted. Names are counted as typed after NFKC and case folding (so
ＡＬＩＣＥ and alice count together), unknown names too (a lock says nothing about whether an
account exists); a name no account could have (too long, control characters) counts by its
digest. Every lock is an audit row (`login.lockout`); failures older than the window are
deleted as new ones come.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import unicodedata
from typing import Any

from .. import audit

TABLES = """
CREATE TABLE IF NOT EXISTS login_failures (
    at TEXT NOT NULL, name TEXT NOT NULL, client TEXT NOT NULL, device TEXT);
CREATE INDEX IF NOT EXISTS login_failures_name ON login_failures (name, at);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures (client, at);
CREATE TABLE IF NOT EXISTS login_locks (
    kind TEXT NOT NULL, key TEXT NOT NULL, until TEXT NOT NULL, failures INTEGER NOT NULL,
    PRIMARY KEY (kind, key));
"""
WINDOW = datetime.timedelta(minutes=15)
LOCK = datetime.timedelta(minutes=15)
LIMITS = {"pair": 5, "client": 20, "account": 20, "device": 5}
ACTOR = "system:login"
NAME_MAX = 64


def prepare(store: Any) -> None:
    """Make the tables where missing. Not the store's own (a database the ingest made before
    them is whole without them): the console makes them when it starts."""
    if not {"login_failures", "login_locks"} <= store.table_names():
        with store.transaction():
            for stmt in TABLES.split(";"):
                if stmt.strip():
                    store.x(stmt)


def name_key(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).casefold().strip()
    if not folded or len(folded) > NAME_MAX or any(c < " " or c == "\x7f" for c in folded):
        return "#" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:32]
    return folded


def client_key(host: str | None) -> str:
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return (host or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:203.0.113.7 is that IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network("%s/64" % ip, strict=False))
    return str(ip)


def _keys(name: str, client: str, device: str | None) -> list[tuple[str, str]]:
    if device is not None:
        return [("device", device)]
    return [("pair", "%s|%s" % (name, client)), ("client", client), ("account", name)]


def _spell(t: datetime.datetime) -> str:
    return audit.spell(t)


def locked_until(store: Any, name: str, client: str, device: str | None,
                 now: datetime.datetime) -> str | None:  # fmt: skip
    """When the latest lock on this attempt ends, or None: it may go ahead."""
    keys = _keys(name, client, device)
    rows = store.x(
        "SELECT max(until) FROM login_locks WHERE until > ? AND (%s)"
        % " OR ".join(["(kind = ? AND key = ?)"] * len(keys)),
        [_spell(now), *[v for k in keys for v in k]],
    ).fetchone()
    return rows[0]


def failed(store: Any, name: str, client: str, device: str | None,
           now: datetime.datetime) -> str | None:  # fmt: skip
    """Count a failure; returns when the lock it set ends, if it set one."""
    at, since = _spell(now), _spell(now - WINDOW)
    until = _spell(now + LOCK)
    counts = {
        "pair": ("name = ? AND client = ? AND device IS NULL", (name, client)),
        "client": ("client = ? AND device IS NULL", (client,)),
        "account": ("name = ? AND device IS NULL", (name,)),
        "device": ("device = ?", (device,)),
    }
    locked = None
    with store.transaction():
        store.x("DELETE FROM login_failures WHERE at < ?", (since,))
        store.x("DELETE FROM login_locks WHERE until < ?", (at,))
        store.x("INSERT INTO login_failures VALUES (?, ?, ?, ?)", (at, name, client, device))
        for kind, key in _keys(name, client, device):
            where, params = counts[kind]
            n = store.x("SELECT count(*) FROM login_failures WHERE at >= ? AND " + where,
                        (since, *params)).fetchone()[0]  # fmt: skip
            if n < LIMITS[kind]:
                continue
            store.x("INSERT INTO login_locks VALUES (?, ?, ?, ?) ON CONFLICT (kind, key) "
                    "DO UPDATE SET until = excluded.until, failures = excluded.failures",
                    (kind, key, until, n))  # fmt: skip
            audit.record(store, at, ACTOR, "login.lockout",
                         "client:" + client if kind == "client" else "login:" + name, None,
                         {"lock": kind, "name": name, "client": client, "device": device,
                          "failures": n, "until": until})  # fmt: skip
            locked = until
    return locked


def succeeded(store: Any, name: str, client: str, device: str | None) -> None:
    """A login: this pair's (or this device's) failures are forgotten."""
    with store.transaction():
        if device is not None:
            store.x("DELETE FROM login_failures WHERE device = ?", (device,))
        store.x("DELETE FROM login_failures WHERE name = ? AND client = ? AND device IS NULL",
                (name, client))  # fmt: skip


# --- the device cookie: this browser logged in to this account before ---------------------------

DEVICE_COOKIE = "gasguard_device"
DEVICE_AGE = datetime.timedelta(days=90)


def _signer(secret: str) -> Any:
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(secret, salt="gasguard-device")


def device_cookie(secret: str, name: str) -> str:
    """A new device cookie for the account name (its key, as name_key makes it)."""
    import secrets

    return _signer(secret).dumps({"n": name, "d": secrets.token_urlsafe(12)})


def device_of(secret: str, cookie: str | None, name: str) -> str | None:
    """The device id, if the cookie is ours, unexpired and for this name; else None."""
    from itsdangerous import BadData

    if not cookie or len(cookie) > 500:
        return None
    try:
        got = _signer(secret).loads(cookie, max_age=DEVICE_AGE.total_seconds())
    except BadData:
        return None
    if not isinstance(got, dict) or got.get("n") != name or not isinstance(got.get("d"), str):
        return None
    return got["d"]
