"""`gasguard regulator hazards`: raise, list, dispatch, rectify and close the ledger's hazards.

Every change names who made it (--by), which the audit log keeps with the row before and after.
Times typed without an offset are this machine's local time; times shown are local too, with
the offset from UTC. Exit 2 for bad input or an action the hazard's state does not allow.
"""

from __future__ import annotations

import json
from typing import Any

from .opening import actor, guarded, hazard_id, ledger, note, when

PROG = "gasguard regulator hazards"
STATUSES = ("open", "dispatched", "rectified", "closed")


def register_hazards(sub: Any) -> Any:
    """Add `hazards` to the `regulator` command's subparsers."""
    from gasguard.tools.exitcodes import epilog

    p = sub.add_parser("hazards", help="the hazard ledger: who fixes what, by when, who checked")
    acts = p.add_subparsers(dest="hazards_action", required=True)
    notes = epilog(
        "here:\n  2  also: no such hazard, or an action its state does not allow\n"
        "times without an offset are local; times are shown local, with the offset from UTC"
    )

    def cmd(name: str, help: str, run: Any) -> Any:
        c = acts.add_parser(name, help=help, epilog=notes)
        c.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
        c.set_defaults(run=run)
        return c

    s = cmd("sync", "raise a hazard for each new incident and compliance finding", main_sync)
    s.add_argument(
        "--deadlines", help='TOML: [deadlines] high = "24h", low = "72h", normal = "7d"'
    )
    ls = cmd("list", "the hazards, by deadline", main_list)
    ls.add_argument("--overdue", action="store_true", help="only those past their deadline")
    ls.add_argument("--site", help="one site (unit)")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--json", action="store_true", help="JSON, times in UTC")
    d = cmd("dispatch", "give a hazard to a responsible person, with a deadline", main_dispatch)
    d.add_argument("id", type=hazard_id)
    d.add_argument("--to", required=True, help="the responsible person (整改责任人)")
    d.add_argument("--deadline", help="ISO 8601 (default: the one its severity gave)")
    d.add_argument("--by", required=True, help="who dispatches it")
    d.add_argument("--note", help="why (e.g. what the last check found)")
    r = cmd("rectify", "record what was done about a dispatched hazard", main_rectify)
    r.add_argument("id", type=hazard_id)
    r.add_argument("--note", required=True, help="what was done (整改情况)")
    r.add_argument("--by", required=True, help="who reports it")
    c = cmd("close", "verify a rectified hazard on site and close it (销号)", main_close)
    c.add_argument("id", type=hazard_id)
    c.add_argument("--by", required=True, help="who checked and signs: not who rectified it")
    c.add_argument("--note", help="what the check found")
    return p


def _now() -> str:
    from .store import now

    return now()


def main_sync(args: Any) -> int:
    def body() -> int:
        from .hazards import DEADLINES, load_deadlines, sync

        deadlines = load_deadlines(args.deadlines) if args.deadlines else DEADLINES
        with ledger(args.db) as store:
            new = sync(store, _now(), deadlines)
        print("%d new hazards" % len(new))
        return 0

    return guarded(PROG + " sync", body)


def main_list(args: Any) -> int:
    def body() -> int:
        from gasguard.tools import human

        from .hazards import listing

        site = actor("--site", args.site) if args.site is not None else None
        with ledger(args.db) as store:
            rows = []
            if "hazards" in store.table_names():
                rows = listing(store, _now(), overdue=args.overdue, site=site,
                               status=args.status)  # fmt: skip
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
            return 0
        print(human.table(
            ("#", "site", "device", "kind", "severity", "status", "responsible", "deadline",
             "found"),
            [(r["id"], r["site"], r["subject"] or None, r["kind"], r["severity"],
              r["status"] + (" OVERDUE" if r["overdue"] else ""), r["responsible"],
              human.local_time(r["deadline"]), human.local_time(r["opened_at"]))
             for r in rows],
            title="%d hazards%s" % (len(rows), " overdue" if args.overdue else ""),
        ))  # fmt: skip
        return 0

    return guarded(PROG + " list", body)


def _show(h: dict[str, Any]) -> None:
    from gasguard.tools import human

    print("hazard %d %s: %s/%s %s; responsible %s, deadline %s"
          % (h["id"], h["status"], h["site"], h["subject"] or "-", h["summary"],
             h["responsible"] or human.MISSING, human.local_time(h["deadline"])))  # fmt: skip


def main_dispatch(args: Any) -> int:
    def body() -> int:
        from .audit import spell
        from .hazards import dispatch

        to, by = actor("--to", args.to), actor("--by", args.by)
        deadline = spell(when("--deadline", args.deadline)) if args.deadline else None
        with ledger(args.db) as store:
            _show(dispatch(store, args.id, to, deadline, by, _now(), note("--note", args.note)))
        return 0

    return guarded(PROG + " dispatch", body)


def main_rectify(args: Any) -> int:
    def body() -> int:
        from .hazards import rectify

        by, text = actor("--by", args.by), note("--note", args.note) or ""
        with ledger(args.db) as store:
            _show(rectify(store, args.id, text, by, _now()))
        return 0

    return guarded(PROG + " rectify", body)


def main_close(args: Any) -> int:
    def body() -> int:
        from .hazards import close

        by, text = actor("--by", args.by), note("--note", args.note)
        with ledger(args.db) as store:
            _show(close(store, args.id, by, _now(), text))
        return 0

    return guarded(PROG + " close", body)
