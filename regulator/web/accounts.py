"""The web console's accounts: a name, a role, a node of the jurisdiction tree it answers for,
and an argon2 hash of its password. `gasguard regulator user add|list|disable`.

Roles: a viewer reads; a dispatcher also moves hazards (dispatch, rectify, close); an admin is a
dispatcher who may be given more later (accounts are made on the command line, by whoever runs
the database). The node is the account's scope: a street's account sees that street's units only,
the city's account every site (the ones no unit names too). Every change to an account is an
audit row in its own transaction; a password never reaches the log, only its hash the table.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

from .. import audit

TABLES = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, node TEXT NOT NULL, password TEXT NOT NULL,
    created_at TEXT NOT NULL, disabled_at TEXT,
    CHECK (role IN ('viewer', 'dispatcher', 'admin')));
"""
ROLES = ("viewer", "dispatcher", "admin")
WRITERS = ("dispatcher", "admin")  # may move hazards
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # argon2 takes any length; a megabyte "password" is an attack on the CPU
NAME_CHARS = 64


def hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # the library's defaults (RFC 9106's low-memory profile)


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_CHARS or any(c < " " or c == "\x7f" for c in name):
        raise ValueError("--name: 1 to %d characters on one line" % NAME_CHARS)
    return name


def check_password(pw: str) -> str:
    if not PASSWORD_MIN <= len(pw) <= PASSWORD_MAX or "\x00" in pw:
        raise ValueError("password: %d to %d characters" % (PASSWORD_MIN, PASSWORD_MAX))
    return pw


def public(row: dict[str, Any]) -> dict[str, Any]:
    """An account as the audit log and listings show it: never the hash."""
    return {k: row[k] for k in ("name", "role", "node", "created_at", "disabled_at")}


def get(store: Any, name: str) -> dict[str, Any] | None:
    rows = store.rows("SELECT * FROM users WHERE name = ?", (name,))
    return rows[0] if rows else None


def add(store: Any, name: str, role: str, node: str, password: str, by: str, at: str) -> None:
    name, password = check_name(name), check_password(password)
    if role not in ROLES:
        raise ValueError("--role: one of %s" % ", ".join(ROLES))
    digest = hasher().hash(password)
    with store.transaction():
        if not store.rows("SELECT id FROM nodes WHERE id = ?", (node,)):
            raise ValueError("--node %s: no such node in the jurisdiction tree (import the "
                             "registry first)" % node)  # fmt: skip
        if get(store, name) is not None:
            raise ValueError("--name %s: an account of that name exists" % name)
        from .throttle import name_key

        twin = [r[0] for r in store.x("SELECT name FROM users").fetchall()
                if name_key(r[0]) == name_key(name)]  # fmt: skip
        if twin:  # the login throttle and the device cookie count names as one: so must we
            raise ValueError("--name %s: too like the account %s (they differ only in case or "
                             "width)" % (name, twin[0]))  # fmt: skip
        store.x("INSERT INTO users VALUES (?, ?, ?, ?, ?, NULL)", (name, role, node, digest, at))
        audit.record(store, at, by, "user.add", "user:" + name, None, public(get(store, name)))


def disable(store: Any, name: str, by: str, at: str) -> None:
    with store.transaction():
        before = get(store, name)
        if before is None:
            raise ValueError("--name %s: no such account" % name)
        store.x("UPDATE users SET disabled_at = ? WHERE name = ?", (at, name))
        audit.record(store, at, by, "user.disable", "user:" + name, public(before),
                     public(get(store, name)))  # fmt: skip


def login(store: Any, name: str, password: str) -> dict[str, Any] | None:
    """The account, if the password is its own and it is not disabled. A wrong name costs the
    same hash as a wrong password (no telling which names exist by the time taken)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:  # no account has such a name (PostgreSQL refuses a NUL in a query's text at all)
        row = get(store, check_name(name)) if name == name.strip() else None
    except ValueError:
        row = None
    ph = hasher()
    if len(password) > PASSWORD_MAX or "\x00" in password:
        return None
    try:
        ph.verify(row["password"] if row else _DUMMY.get(ph), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled_at"] is not None:
        return None
    return row


class _Dummy:
    hash: str | None = None

    def get(self, ph: Any) -> str:
        if self.hash is None:
            self.hash = ph.hash("no account has this password, it is only hashed")
        return self.hash


_DUMMY = _Dummy()


def scope_of(store: Any, node: str) -> str | None:
    """What an account at node may see: None (every site) for a city, else the node."""
    row = store.rows("SELECT level FROM nodes WHERE id = ?", (node,))
    return None if row and row[0]["level"] == "city" else node


# --- `gasguard regulator user` -------------------------------------------------------------------


def register_user(rs: Any) -> Any:
    from gasguard.tools.exitcodes import epilog

    p = rs.add_parser("user", help="the web console's accounts: add, list, disable")
    acts = p.add_subparsers(dest="user_action", required=True)
    notes = epilog("here:\n  2  also: a name taken, a node not in the tree, a short password")
    a = acts.add_parser("add", help="an account with a role, scoped to a node", epilog=notes)
    a.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    a.add_argument("--name", required=True)
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--node", required=True, help="the node of the tree it answers for")
    a.add_argument("--password-file", help="first line is the password (default: a prompt)")
    a.add_argument("--by", default=None, help="who adds it (recorded; default: $USER)")
    a.set_defaults(run=main_add)
    ls = acts.add_parser("list", help="the accounts (no passwords)", epilog=notes)
    ls.add_argument("--db", required=True)
    ls.set_defaults(run=main_list)
    d = acts.add_parser("disable", help="refuse an account's logins from now on", epilog=notes)
    d.add_argument("--db", required=True)
    d.add_argument("--name", required=True)
    d.add_argument("--by", default=None)
    d.set_defaults(run=main_disable)
    return p


def _by(args: Any) -> str:
    import os

    from ..opening import actor

    return actor("--by", args.by or "cli:%s" % os.environ.get("USER", "root"))


def _password(args: Any) -> str:
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                text = f.read(PASSWORD_MAX + 2)
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError("--password-file: %s" % e) from None
        return check_password(text.splitlines()[0] if text.strip() else "")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the password on: give --password-file")
    first = getpass.getpass("password for %s: " % args.name)
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return check_password(first)


def main_add(args: Any) -> int:
    from ..opening import guarded, open_ledger
    from ..store import now

    def body() -> int:
        pw = _password(args)
        store = open_ledger(args.db)
        try:
            add(store, args.name, args.role, args.node, pw, _by(args), now())
        finally:
            store.close()
        print("account %s (%s at %s) added" % (args.name.strip(), args.role, args.node))
        return 0

    return guarded("gasguard regulator user add", body)


def main_list(args: Any) -> int:
    from gasguard.tools import human

    from ..opening import guarded, ledger

    def body() -> int:
        with ledger(args.db) as store:
            rows = store.rows("SELECT * FROM users ORDER BY name") if "users" in \
                store.table_names() else []  # fmt: skip
        print(human.table(("name", "role", "node", "created", "disabled"),
                          [(r["name"], r["role"], r["node"], human.local_time(r["created_at"]),
                            human.local_time(r["disabled_at"])) for r in rows]))  # fmt: skip
        return 0

    return guarded("gasguard regulator user list", body)


def main_disable(args: Any) -> int:
    from ..opening import guarded, open_ledger
    from ..store import now

    def body() -> int:
        store = open_ledger(args.db)
        try:
            disable(store, args.name, _by(args), now())
        finally:
            store.close()
        print("account %s disabled" % args.name)
        return 0

    return guarded("gasguard regulator user disable", body)
