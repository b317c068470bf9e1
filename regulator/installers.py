"""The registry of installers and their Ed25519 public keys (issue 26): a commissioning record is
valid only when the key that signed it is registered here, to the installer it names, and not
revoked. `gasguard regulator installer add | revoke | list`; every change audited.

A key is registered from the public key file `gasguard installer keygen` writes (raw 32 bytes
as base64, hex or a PEM SubjectPublicKeyInfo). Revoking a key (a lost laptop, a certificate
withdrawn) refuses every record that arrives from then on; records accepted before stay on
their units and say who signed them (their finish time is the signer's own claim, so a record
cannot be judged by whether it "was signed before" the revocation).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from gasguard.protocol import record as rec

from . import audit
from .opening import actor, guarded, ledger
from .refusal import Refusal

TABLES = """
CREATE TABLE IF NOT EXISTS installers (
    key_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, name TEXT NOT NULL, company TEXT NOT NULL,
    certificate TEXT NOT NULL, added_at TEXT NOT NULL, added_by TEXT NOT NULL,
    revoked_at TEXT, revoked_by TEXT, revoked_reason TEXT);
"""
PROG = "gasguard regulator installer"
KEY_FILE_MAX = 4096


def read_public_key(path: Path) -> bytes:
    """The raw 32 bytes of an Ed25519 public key file; Refusal naming the file otherwise."""
    try:
        with path.open("rb") as f:
            data = f.read(KEY_FILE_MAX + 1)
    except OSError as e:
        raise Refusal("--public-key %(path)s: %(why)s", path=str(path),
                      why=e.strerror or str(e)) from None  # fmt: skip
    if len(data) > KEY_FILE_MAX:
        raise Refusal("--public-key %(path)s: not a public key file", path=str(path))
    text = data.strip()
    if text.startswith(b"-----BEGIN PUBLIC KEY-----"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            k = serialization.load_pem_public_key(text)
        except ValueError:
            k = None
        if not isinstance(k, Ed25519PublicKey):
            raise Refusal("--public-key %(path)s: not an Ed25519 public key", path=str(path))
        return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if text.startswith(b"-----BEGIN"):
        raise Refusal("--public-key %(path)s: a private key or certificate, not the public key "
                      "(give the .pub file keygen wrote)", path=str(path))  # fmt: skip
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            raw = decode(text.decode("ascii"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(raw) == 32:
            return raw
    raise Refusal("--public-key %(path)s: not an Ed25519 public key (32 bytes as base64, hex or "
                  "PEM)", path=str(path))  # fmt: skip


def lookup(store: Any, key_id: str) -> dict[str, Any] | None:
    got = store.rows("SELECT * FROM installers WHERE key_id = ?", (key_id,))
    return got[0] if got else None


def add(store: Any, at: str, by: str, name: str, company: str, certificate: str,
        public_raw: bytes) -> dict[str, Any]:  # fmt: skip
    kid = rec.key_id(public_raw)
    row = {"key_id": kid, "public_key": base64.b64encode(public_raw).decode(), "name": name,
           "company": company, "certificate": certificate, "added_at": at,
           "added_by": by}  # fmt: skip
    with store.transaction():
        old = lookup(store, kid)
        if old is not None:
            raise Refusal("key %(key_id)s is already registered to %(name)s (%(certificate)s)",
                          key_id=kid, name=old["name"],
                          certificate=old["certificate"])  # fmt: skip
        store.x("INSERT INTO installers (key_id, public_key, name, company, certificate, "
                "added_at, added_by) VALUES (?,?,?,?,?,?,?)", list(row.values()))  # fmt: skip
        audit.record(store, at, by, "installer.add", "installer:" + kid, None, row)
    return row


def revoke(store: Any, at: str, by: str, key_id: str, reason: str) -> dict[str, Any]:
    with store.transaction():
        old = lookup(store, key_id)
        if old is None:
            raise Refusal("no installer key %(key_id)s", key_id=key_id)
        if old["revoked_at"] is not None:
            raise Refusal("key %(key_id)s was revoked at %(at)s", key_id=key_id,
                          at=old["revoked_at"])  # fmt: skip
        store.x("UPDATE installers SET revoked_at = ?, revoked_by = ?, revoked_reason = ? "
                "WHERE key_id = ?", (at, by, reason, key_id))  # fmt: skip
        new = dict(old, revoked_at=at, revoked_by=by, revoked_reason=reason)
        audit.record(store, at, by, "installer.revoke", "installer:" + key_id, old, new)
    return new


# --- the command -------------------------------------------------------------------------------


def register_installer(sub: Any) -> Any:
    from gasguard.tools.exitcodes import epilog

    p = sub.add_parser("installer", help="installers and the public keys their commissioning "
                       "records are verified with")  # fmt: skip
    acts = p.add_subparsers(dest="installer_action", required=True)
    notes = epilog("here:\n  2  also: a key already registered, no such key, a bad key file")

    def cmd(name: str, help: str, run: Any) -> Any:
        c = acts.add_parser(name, help=help, epilog=notes)
        c.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
        c.set_defaults(run=run)
        return c

    a = cmd("add", "register an installer's public key (from `gasguard installer keygen`)",
            main_add)  # fmt: skip
    a.add_argument("--name", required=True, help="the installer's name, as on the certificate")
    a.add_argument("--company", required=True)
    a.add_argument("--certificate", required=True, help="the installer's certificate number")
    a.add_argument("--public-key", required=True, type=Path, help="the .pub file keygen wrote")
    a.add_argument("--by", required=True, help="who registers it (the audit log keeps it)")
    r = cmd("revoke", "refuse every record signed by this key from now on", main_revoke)
    r.add_argument("key_id", help="the key's id (16 hex, `installer list`)")
    r.add_argument("--reason", required=True)
    r.add_argument("--by", required=True)
    ls = cmd("list", "the registered installers", main_list)
    ls.add_argument("--json", action="store_true")
    return p


def main_add(args: Any) -> int:
    def body() -> int:
        from .store import now

        fields = {k: actor("--" + k, getattr(args, k)) for k in ("name", "company", "certificate")}
        by = actor("--by", args.by)
        raw = read_public_key(args.public_key)
        with ledger(args.db) as store:
            row = add(store, now(), by, fields["name"], fields["company"],
                      fields["certificate"], raw)  # fmt: skip
        print("registered %s (%s, %s): key %s" % (row["name"], row["company"],
                                                  row["certificate"], row["key_id"]))  # fmt: skip
        return 0

    return guarded(PROG, body)


def main_revoke(args: Any) -> int:
    def body() -> int:
        from .store import now

        by = actor("--by", args.by)
        reason = actor("--reason", args.reason)
        with ledger(args.db) as store:
            row = revoke(store, now(), by, args.key_id.strip().lower(), reason)
        print("revoked key %s of %s: records it signs are refused from now on"
              % (row["key_id"], row["name"]))  # fmt: skip
        return 0

    return guarded(PROG, body)


def main_list(args: Any) -> int:
    def body() -> int:
        with ledger(args.db) as store:
            rows = store.rows("SELECT key_id, name, company, certificate, added_at, revoked_at, "
                              "revoked_reason FROM installers ORDER BY name, key_id")  # fmt: skip
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
            return 0
        for r in rows:
            print("%s  %s  %s  %s%s" % (r["key_id"], r["name"], r["company"], r["certificate"],
                  "  REVOKED %s: %s" % (r["revoked_at"], r["revoked_reason"])
                  if r["revoked_at"] else ""))  # fmt: skip
        return 0

    return guarded(PROG, body)
