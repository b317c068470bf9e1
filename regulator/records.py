"""Commissioning records at the regulator (issue 26): each one that reaches a unit's device topic
is judged and kept, accepted or refused with its reason; the newest accepted one (by its signed
finish time) is the device's commissioning, which the unit page shows and compliance uses.

Judged, in order: the record's canonical form (no floats, within the size: protocol/record.py),
its top-level fields (commissioning.schema.json, $defs/record), that it is for the site and
device of the topic it came on (the broker's ACL ties a topic to its site's gateway), a
well-formed signature, a key registered to an installer (regulator/installers.py), not revoked,
to the certificate the record names, and the Ed25519 signature over the record as it is now.

Kept by (site, device, digest of the canonical bytes): the same record again (a gateway sends
its newest at every connect) is counted, not stored twice; an older record replayed after a
newer one is kept, valid, but does not count (the newer finished later). A refused record is
judged again when it comes again (its installer may have been registered meanwhile); an
accepted one stays accepted. Every verdict is written to the audit log in the ingest's batch.
A site keeps at most REFUSED_PER_SITE refused records; the ingest puts more in `rejected`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from gasguard.gateway import schemas
from gasguard.protocol import record as rec

from . import audit, boundary, installers

TABLES = """
CREATE TABLE IF NOT EXISTS commissioning_records (
    site TEXT NOT NULL, device TEXT NOT NULL, digest TEXT NOT NULL, record_id TEXT,
    status TEXT NOT NULL, reason TEXT, key_id TEXT, installer TEXT, company TEXT,
    certificate TEXT, verdict TEXT, finished_at TEXT, high_to_closed_ms BIGINT,
    bump_tests TEXT, event_log_head TEXT, gateway TEXT, received_at TEXT NOT NULL,
    judged_at TEXT NOT NULL, times BIGINT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, device, digest));
CREATE INDEX IF NOT EXISTS commissioning_current
    ON commissioning_records (site, device, status, finished_at);
"""
ACCEPTED, REFUSED = "accepted", "refused"
ACTOR = "ingest"
COLS = ("record_id", "status", "reason", "key_id", "installer", "company", "certificate",
        "verdict", "finished_at", "high_to_closed_ms", "bump_tests", "event_log_head",
        "gateway")  # fmt: skip
MAX_CLOSE_MS = 3_600_000  # bump_tests[].high_to_closed_ms's maximum (commissioning.schema.json)
# refused records kept per site: anyone with a site's broker login can send endless distinct
# ones (each up to 320 KiB, with an audit row); past this they go to the bounded `rejected`
REFUSED_PER_SITE = 200
NOT_KEPT = "not kept"


class Invalid(ValueError):
    """Why a record does not count (kept as its reason)."""


def _s(v: Any, n: int = 200) -> str | None:
    """A string of the record for a column: what a database's text cannot hold (NUL for
    PostgreSQL, lone surrogates for UTF-8) made visible rather than failing the batch."""
    if not isinstance(v, str):
        return None
    return v[:n].replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def _get(r: Any, *path: str) -> Any:
    for k in path:
        r = r.get(k) if isinstance(r, dict) else None
    return r


def _bumps(r: dict[str, Any]) -> list[dict[str, Any]]:
    tests = r.get("bump_tests")
    out = []
    for t in tests[:8] if isinstance(tests, list) else []:
        if isinstance(t, dict):
            ms, det = t.get("high_to_closed_ms"), t.get("detector")
            # a refused record's numbers are anyone's: the schema's ranges, or a BIGINT column
            # (and the page) would fail the row for 2^70
            out.append({"detector": det if type(det) is int and 0 <= det <= 247 else None,
                        "high_to_closed_ms": ms if type(ms) is int and 0 <= ms <= MAX_CLOSE_MS
                        else None,
                        "result": _s(t.get("result"), 32)})  # fmt: skip
    return out


def judge(store: Any, site: str, device: str, r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(digest, the row's columns) for a record that came on site/device's topic."""
    reason = None
    try:
        digest = rec.digest(r)
    except rec.RecordError as e:  # a float, too large: named by its text instead
        reason = str(e)
        text = json.dumps(r, sort_keys=True, ensure_ascii=False, default=repr)
        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    inst = None
    try:
        if reason is not None:
            raise Invalid(reason)
        _check(store, site, device, r)
        inst = installers.lookup(store, r["installer"]["key_id"])
    except Invalid as e:
        reason = str(e)
    bumps = _bumps(r)
    closes = [b["high_to_closed_ms"] for b in bumps if b["high_to_closed_ms"] is not None]
    finished = _s(r.get("finished_at"), 40)
    try:
        finished = boundary.canonical_time(finished, "finished_at") if finished else None
    except boundary.Refused:
        finished = None
    row = {
        "record_id": _s(r.get("record_id"), 64),
        "status": REFUSED if reason else ACCEPTED,
        "reason": _s(reason, 300),
        "key_id": _s(_get(r, "signature", "key_id"), 64),
        # who signed: the registry's name when the key is registered, else the record's claim
        "installer": inst["name"] if inst else _s(_get(r, "installer", "name"), 100),
        "company": inst["company"] if inst else _s(_get(r, "installer", "company")),
        "certificate": inst["certificate"] if inst else _s(_get(r, "installer", "certificate")),
        "verdict": _s(r.get("verdict"), 16),
        "finished_at": finished,
        "high_to_closed_ms": max(closes) if closes else None,  # the slowest close measured
        "bump_tests": json.dumps(bumps),
        "event_log_head": _s(r.get("event_log_head"), 128),
    }
    return digest, row


def _check(store: Any, site: str, device: str, r: dict[str, Any]) -> None:
    try:
        schemas.check_record(r)
    except schemas.SchemaError as e:
        raise Invalid("schema: %s" % e) from None
    try:
        finished = boundary.calendar_time(r["finished_at"], "finished_at")
    except boundary.Refused as e:
        raise Invalid(str(e)) from None
    if finished.timestamp() > time.time() + boundary.FUTURE_SLACK_S:
        # the newest record counts: one dated ahead would hold its device for ever
        raise Invalid("finished_at %s is in the future" % r["finished_at"])
    if (r["site"], r["device"]) != (site, device):
        raise Invalid("the record is for site %s, device %s, but came on the topic of site %s, "
                      "device %s" % (r["site"], r["device"], site, device))  # fmt: skip
    try:
        key_id = rec.signer(r)
    except rec.RecordError as e:
        raise Invalid(str(e)) from None
    if key_id != r["installer"]["key_id"]:
        raise Invalid("signed by key %s, but the record names the installer's key %s"
                      % (key_id, r["installer"]["key_id"]))  # fmt: skip
    inst = installers.lookup(store, key_id)
    if inst is None:
        raise Invalid("signed by key %s, which no registered installer holds" % key_id)
    if inst["revoked_at"] is not None:
        raise Invalid("signed by key %s of %s, revoked at %s: %s"
                      % (key_id, inst["name"], inst["revoked_at"], inst["revoked_reason"]))
    cert = r["installer"].get("certificate")
    if cert is not None and cert != inst["certificate"]:
        raise Invalid("the record names certificate %r; key %s is registered to %s, certificate "
                      "%r" % (cert, key_id, inst["name"], inst["certificate"]))  # fmt: skip
    try:
        rec.verify(r, base64.b64decode(inst["public_key"]))
    except rec.RecordError as e:
        raise Invalid(str(e)) from None


def ingest(store: Any, m: boundary.Message, at: str) -> str:
    """Judge and keep one record message (inside the ingest's batch transaction); its status,
    or NOT_KEPT for a refused one past the site's REFUSED_PER_SITE (the caller rejects it)."""
    d = m.payload["data"]
    r = d["record"]
    digest, row = judge(store, m.site, m.subject, r)
    row["gateway"] = d["gateway"]
    target = "commissioning:%s/%s" % (m.site, m.subject)
    old = store.rows(
        "SELECT status, reason, times FROM commissioning_records WHERE site = ? AND device = ? "
        "AND digest = ?", (m.site, m.subject, digest),
    )  # fmt: skip
    if not old and row["status"] == REFUSED and store.x(
        "SELECT count(*) FROM commissioning_records WHERE site = ? AND status = ?",
        (m.site, REFUSED),
    ).fetchone()[0] >= REFUSED_PER_SITE:  # fmt: skip
        return NOT_KEPT
    if not old:
        store.x(
            "INSERT INTO commissioning_records (site, device, digest, %s, received_at, "
            "judged_at, times, payload) VALUES (?,?,?,%s,?,?,1,?)"
            % (", ".join(COLS), ",".join("?" * len(COLS))),
            (m.site, m.subject, digest, *(row[c] for c in COLS), at, at,
             json.dumps(r, default=repr)),  # ASCII: NUL and lone surrogates escaped
        )  # fmt: skip
    elif old[0]["status"] == REFUSED and (row["status"], row["reason"]) != (
        old[0]["status"], old[0]["reason"]):  # fmt: skip
        store.x(
            "UPDATE commissioning_records SET %s, judged_at = ?, times = times + 1 "
            "WHERE site = ? AND device = ? AND digest = ?"
            % ", ".join("%s = ?" % c for c in COLS),
            (*(row[c] for c in COLS), at, m.site, m.subject, digest),
        )  # fmt: skip
    else:  # the same record again, the same verdict: counted
        store.x("UPDATE commissioning_records SET times = times + 1 WHERE site = ? AND "
                "device = ? AND digest = ?", (m.site, m.subject, digest))  # fmt: skip
        return old[0]["status"]
    audit.record(store, at, ACTOR, "commissioning." + row["status"], target, None,
                 {"digest": digest, "record_id": row["record_id"], "reason": row["reason"],
                  "key_id": row["key_id"], "gateway": row["gateway"]})  # fmt: skip
    return row["status"]


def current(store: Any, sites: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The record that counts for each device of these sites: its newest accepted one."""
    among, param = store.in_list(sites)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in store.rows(
        "SELECT * FROM commissioning_records WHERE status = 'accepted' AND site IN %s "
        "ORDER BY site, device, finished_at DESC, received_at DESC" % among, [param],
    ):  # fmt: skip
        out.setdefault((r["site"], r["device"]), r)
    return out


# a refusal's reason (English, from the checks above) -> a short kind the console translates
REASON_KINDS = (
    ("the signature does not match", "altered after signing"),
    ("unsigned", "not signed"),
    ("signature:", "signature malformed"),
    ("which no registered installer holds", "key not registered"),
    ("revoked at", "key revoked"),
    ("but came on the topic of", "not this device's record"),
    ("is in the future", "dated in the future"),
    ("is registered to", "installer does not match"),
    ("but the record names the installer's key", "installer does not match"),
)


def reason_kind(reason: str | None) -> str:
    for text, kind in REASON_KINDS:
        if reason and text in reason:
            return kind
    return "malformed record"


def for_site(store: Any, site: str, limit: int = 20) -> list[dict[str, Any]]:
    """A unit page's records: per device, the one that counts first, then the others newest
    first (refused ones with their reason); `counts` marks the one that counts."""
    rows = store.rows(
        "SELECT site, device, digest, %s, received_at, times FROM commissioning_records "
        "WHERE site = ? ORDER BY device, received_at DESC LIMIT ?" % ", ".join(COLS),
        (site, limit),
    )  # fmt: skip
    counting = current(store, [site])
    # the limit counts refused records too, which anyone with the site's broker login can send:
    # the ones that count are shown whatever came after them
    shown = {(r["device"], r["digest"]) for r in rows}
    rows += [{k: c[k] for k in ("site", "device", "digest", *COLS, "received_at", "times")}
             for c in counting.values() if (c["device"], c["digest"]) not in shown]  # fmt: skip
    for r in rows:
        c = counting.get((r["site"], r["device"]))
        r["counts"] = c is not None and c["digest"] == r["digest"]
        r["superseded"] = r["status"] == ACCEPTED and not r["counts"]
        r["bump_tests"] = json.loads(r["bump_tests"] or "[]")
        r["reason_kind"] = reason_kind(r["reason"]) if r["status"] == REFUSED else None
    rows.sort(key=lambda r: (r["device"], not r["counts"]))
    return rows
