"""`gasguard regulator report`: a district's week (or every district's) as PDF and XLSX, by hand.

The scheduled run (schedule.py) makes the same files; both record each report made in the audit
log (`report.generate`), which is why this opens the ledger for writing.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

PROG = "gasguard regulator report"


def register_report(sub: Any) -> Any:
    """Add `report` to the `regulator` command's subparsers."""
    from gasguard.tools.exitcodes import epilog

    p = sub.add_parser(
        "report",
        help="the weekly report of a district (or all): PDF and XLSX, Chinese and English",
        epilog=epilog(
            "here:\n  1  also: the PDF could not be printed (no Chromium) or a file written\n"
            "  2  also: an unknown district, a week not over yet, a report file already there "
            "(--replace)\nweeks run Monday 00:00 to Monday 00:00, Asia/Shanghai; the figures' "
            "definitions are printed in the report and in docs/regulator.md"
        ),
    )
    p.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--district", help="a district's id (上海市/徐汇区) or name (徐汇区)")
    which.add_argument("--all", action="store_true", help="every district in the registry")
    p.add_argument("--week", help="ISO week, e.g. 2026-W48 (default: the week just ended)")
    p.add_argument("--out", required=True, help="the directory the files go to")
    p.add_argument("--replace", action="store_true",
                   help="write this week's files again over those already there")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON line per report made")
    p.set_defaults(run=main_report)
    return p


def main_report(args: Any) -> int:
    """A refusal is one line on stderr (and, with --json, a JSON error on stdout): exit 2; an
    unreachable database exit 3; a PDF Chromium could not print exit 1."""
    from gasguard.tools.pdf import PdfError

    from ..store import StoreUnreachable

    try:
        return _run(args)
    except StoreUnreachable as e:
        code, message = 3, "database unreachable: %s" % e
    except ValueError as e:  # bad input, not our database, a report already there
        code, message = 2, str(e)
    except (PdfError, OSError) as e:  # no Chromium, a full disk: nothing half-written is left
        code, message = 1, str(e)
    print("%s: %s" % (PROG, message), file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "error": message, "exit_code": code},
                         ensure_ascii=False))  # fmt: skip
    return code


def _run(args: Any) -> int:
    from .. import audit
    from ..opening import ledger
    from . import render, schedule
    from .figures import compute, districts, find_district
    from .week import check_over, last_ended, parse

    now = datetime.datetime.now(datetime.UTC)
    week = parse(args.week) if args.week is not None else last_ended(now)
    check_over(week, now)
    out = Path(args.out).resolve()  # the audit row names the files wherever it is read
    if not out.is_dir():
        raise ValueError("--out %s: no such directory" % out)
    with ledger(args.db) as store:
        chosen = districts(store) if args.all else [find_district(store, args.district)]
        if not args.replace:  # all or none: look before making any
            there = [p.name for d in chosen for p in render.targets(_named(d, week), out)
                     if p.exists()]  # fmt: skip
            if there:
                raise ValueError("--out: %s exists already (--replace writes it again)"
                                 % ", ".join(there[:3] + (["…"] if len(there) > 3 else [])))
        for d in chosen:
            rep = compute(store, d, week, now)
            files = render.write(rep, out, replace=args.replace)
            with store.transaction():
                made = schedule.record(store, rep, files, audit.spell(now))
            if args.json:
                keep = ("district", "week", "files", "figures")
                print(json.dumps({"ok": True, **{k: made[k] for k in keep}}, ensure_ascii=False))
            else:
                print("%s %s: %s" % (d.id, week.name, ", ".join(str(p) for p in files)))
    return 0


def _named(d: Any, week: Any) -> Any:
    """Enough of a report to name its files."""
    from .figures import Report

    return Report(d, week, datetime.datetime.now(datetime.UTC))
