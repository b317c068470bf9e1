"""Escalation chains: who is told, and who next when nobody acknowledges (docs/regulator.md).

Generic over "subjects needing attention". A provider is a function (store, now) -> [Subject]
returning what is open now; a subject stopped (acknowledged, cleared, closed) is never told
again. Each chain step fires once per subject: a row in notify_steps, the step's messages
enqueued and the step audited, all in one transaction, so a replay or a second deliverer
never fires it twice and a crash never fires it half.

Providers:
- incidents (here): an open incident, not acknowledged on site or in the console
  (regulator/acks.py), not cleared, not closed; its chain is its level's (high / low). Its
  clock starts when the regulator first stored the opening alarm (events.ingested_at), not at
  the board's own time: a board whose clock is not set yet would make every step due at once.
- work orders: `regulator/workorders.py: overdue(store, now: datetime) ->
  list[dict(id, site, severity, deadline, responsible, closed_at)]`; each is a subject of kind
  "workorder", chain "workorder", its clock starting at the deadline, stopped once closed_at is
  set. It is used when that module exists (workorder_provider).

Step 0 of an incident is also fired by the ingest itself, inside the transaction that opened
the incident (opened_hook, wired by `regulator ingest --notify-config`): the first message is
decided with the ledger change, and the deliverer is woken at its commit. The engine's tick
fires it too if the ingest was not given the config: the step's row makes the two one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import audit, workorders
from . import messages, outbox
from .config import Config, Contact

TABLES = """
CREATE TABLE IF NOT EXISTS notify_steps (
    subject TEXT NOT NULL, step INTEGER NOT NULL, due_at TEXT NOT NULL, fired_at TEXT NOT NULL,
    recipients INTEGER NOT NULL, PRIMARY KEY (subject, step));
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (site, device) WHERE closed_at IS NULL;
"""
ACTOR = "notify"


@dataclass(frozen=True)
class Subject:
    kind: str  # "incident" | "workorder"
    key: str  # stable: the notify_steps and outbox keys start with it
    site: str
    severity: str  # the chain: high | low | workorder
    since: datetime.datetime  # the chain's clock starts here
    stopped: bool = False
    target: str = ""  # the audit target ("incident:<site>/<open_event>", "workorder:<id>")
    context: dict[str, Any] = field(default_factory=dict)


Provider = Callable[[Any, datetime.datetime], list[Subject]]


def parse_time(t: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(datetime.UTC)


def _incident_subject(r: dict[str, Any], since: str) -> Subject:
    return Subject(
        "incident", "incident:%s/%s/%s:%s" % (r["site"], r["device"], r["open_event"], r["level"]),
        r["site"], r["level"], parse_time(since), False,
        "incident:%s/%s" % (r["site"], r["open_event"]), r,
    )  # fmt: skip


def incident_provider(store: Any, now: datetime.datetime) -> list[Subject]:
    rows = store.rows(
        "SELECT i.site, i.device, i.open_event, i.level, i.opened_at, i.peak_lel, "
        "i.valve_closed_at, (SELECT e.ingested_at FROM events e WHERE e.site = i.site AND "
        "e.device = i.device AND e.id = i.open_event) AS heard FROM incidents i "
        "WHERE i.closed_at IS NULL AND i.cleared_at IS NULL AND i.acknowledged_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM alarm_acks a WHERE a.site = i.site AND "
        "a.device = i.device AND a.open_event = i.open_event)"
    )
    return [_incident_subject(r, r["heard"] or r["opened_at"]) for r in rows]


def workorder_provider(store: Any, now: datetime.datetime) -> list[Subject]:
    out = []
    for w in workorders.overdue(store, now):
        deadline = w["deadline"]
        since = parse_time(deadline) if isinstance(deadline, str) else deadline
        out.append(
            Subject(
                "workorder",
                "workorder:%s" % w["id"],
                w["site"],
                "workorder",
                since,
                w.get("closed_at") is not None,
                "workorder:%s" % w["id"],
                dict(w),
            )
        )
    return out


def providers() -> list[Provider]:
    return [incident_provider, workorder_provider]


# --- who is told ---------------------------------------------------------------------------------


def _unit(store: Any, site: str) -> dict[str, Any]:
    rows = store.rows("SELECT name, address, responsible, phone, node FROM units WHERE site = ?",
                      (site,))  # fmt: skip
    return rows[0] if rows else {"name": site, "address": "", "node": None}


def recipients(cfg: Config, unit: dict[str, Any], roles: tuple[str, ...]) -> list[Contact]:
    """The contacts of these roles at the unit's node or above it; the owner from the registry.
    One per (channel, to): a robot group two nodes share is told once."""
    node = unit.get("node")
    out: dict[tuple[str, str], Contact] = {}
    if "owner" in roles and unit.get("phone"):
        for ch in cfg.owner_channels:
            c = Contact(node or "", "owner", ch, unit["phone"], unit.get("responsible") or "",
                        cfg.owner_language)  # fmt: skip
            out.setdefault((ch, c.to), c)
    if node:
        for c in cfg.contacts:
            if c.role in roles and (node == c.node or node.startswith(c.node + "/")):
                out.setdefault((c.channel, c.to), c)
    return list(out.values())


def unplaced(store: Any, cfg: Config) -> list[Contact]:
    """Contacts whose node the registry does not hold (a typo, a node renamed): nobody there is
    ever told, and a step that told someone else beside them looks fine. Said at the deliverer's
    start (notify.toml is checked without the database)."""
    nodes = {c.node for c in cfg.contacts}
    if not nodes:
        return []
    sql, arg = store.in_list(sorted(nodes))
    known = {r[0] for r in store.x("SELECT id FROM nodes WHERE id IN %s" % sql, (arg,)).fetchall()}
    return [c for c in cfg.contacts if c.node not in known]


def _body(store: Any, cfg: Config, s: Subject, unit: dict[str, Any], lang: str,
          step: int) -> dict[str, Any]:  # fmt: skip
    if s.kind == "workorder":
        return messages.workorder(lang, cfg.base_url, unit, s.context, step)
    r = s.context
    valve = "closed" if r.get("valve_closed_at") else None
    if valve is None:
        got = store.x("SELECT valve FROM devices WHERE site = ? AND device = ?",
                      (r["site"], r["device"])).fetchone()  # fmt: skip
        valve = got[0] if got and got[0] in ("open", "closed") else None
    return messages.alarm(lang, cfg.base_url, unit, r, step, valve, s.severity)


def fire(store: Any, cfg: Config, s: Subject, step: int, now: datetime.datetime) -> int:
    """Fire one step (inside the caller's transaction): messages enqueued, the step audited.
    The number of messages; 0 if this step had already fired."""
    chain = cfg.chains[s.severity]
    due = s.since + chain[step].after
    at = outbox._at(now)
    cur = store.x(
        "INSERT INTO notify_steps (subject, step, due_at, fired_at, recipients) "
        "VALUES (?,?,?,?,0) ON CONFLICT (subject, step) DO NOTHING",
        (s.key, step, outbox._at(due), at),
    )
    if cur.rowcount != 1:
        return 0
    unit = _unit(store, s.site)
    told = recipients(cfg, unit, chain[step].roles)
    kind = "workorder" if s.kind == "workorder" else ("alarm" if step == 0 else "escalation")
    bodies: dict[str, dict[str, Any]] = {}
    n = 0
    for c in told:
        body = bodies.get(c.language) or bodies.setdefault(
            c.language, _body(store, cfg, s, unit, c.language, step))  # fmt: skip
        key = "%s:%d:%s:%s" % (s.key, step, c.channel, c.to)
        n += outbox.enqueue(
            store,
            key=key,
            channel=c.channel,
            recipient=c.to or c.channel,
            kind=kind,
            subject=s.target,
            site=s.site,
            body=body,
            at=at,
        )
    store.x("UPDATE notify_steps SET recipients = ? WHERE subject = ? AND step = ?",
            (len(told), s.key, step))  # fmt: skip
    # a step that told nobody (no contact at or above the unit's node, an owner without a
    # phone) is its own action and counted by outbox.counts(): a message that never went
    action = "notify.escalate" if told else "notify.untold"
    audit.record(store, at, ACTOR, action, s.target, None, {
        "step": step + 1, "chain": s.severity, "roles": list(chain[step].roles),
        "due_at": outbox._at(due), "told": ["%s %s" % (c.role, c.channel) for c in told],
        "late_ms": round((now - due).total_seconds() * 1000)})  # fmt: skip
    return n


def _due(cfg: Config, subjects: list[Subject], now: datetime.datetime,
         fired: set[tuple[str, int]]) -> list[tuple[Subject, int]]:  # fmt: skip
    out = []
    for s in subjects:
        chain = cfg.chains.get(s.severity)
        if s.stopped or not chain:
            continue
        for i, st in enumerate(chain):
            if s.since + st.after > now:
                break
            if (s.key, i) not in fired:
                out.append((s, i))
    return out


def _fired(store: Any, subjects: list[Subject]) -> set[tuple[str, int]]:
    if not subjects:
        return set()
    sql, param = store.in_list([s.key for s in subjects])
    rows = store.x("SELECT subject, step FROM notify_steps WHERE subject IN %s" % sql, (param,))
    return {(r[0], r[1]) for r in rows.fetchall()}


def tick(store: Any, cfg: Config, now: datetime.datetime,
         provs: list[Provider] | None = None) -> int:  # fmt: skip
    """Fire every step now due (read first; a write transaction only when one is due, so a
    quiet city costs one read a tick). Re-read inside the transaction: an acknowledgement that
    arrived in between stops the step."""
    provs = providers() if provs is None else provs
    subjects = [s for p in provs for s in p(store, now)]
    if not _due(cfg, subjects, now, _fired(store, subjects)):
        return 0
    n = 0
    with store.transaction():
        subjects = [s for p in provs for s in p(store, now)]
        for s, i in _due(cfg, subjects, now, _fired(store, subjects)):
            n += fire(store, cfg, s, i, now)
    return n


def opened_hook(cfg: Config) -> Callable[[Any, Any], None]:
    """For Store.incident_hooks: step 0 of a new (or newly high) incident, in the ingest's
    transaction. Steps after 0 s are left to the engine's tick."""

    def hook(store: Any, inc: Any) -> None:
        chain = cfg.chains.get(inc.level)
        if not chain or chain[0].after:
            return
        now = datetime.datetime.now(datetime.UTC)
        r = {"site": inc.site, "device": inc.device, "open_event": inc.open_event,
             "level": inc.level, "opened_at": inc.opened_at, "peak_lel": inc.peak_lel,
             "valve_closed_at": inc.valve_closed_at}  # fmt: skip
        fire(store, cfg, _incident_subject(r, outbox._at(now)), 0, now)

    return hook
