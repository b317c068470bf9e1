"""`gasguard regulator`: the regulator's end, on the ingest's store (regulator/).

`ingest` is the only thing that subscribes to the sites' streams; `watch` and `api` read what it
stored; `export` writes the store's incidents as CSV (until regulator/export.py replaces it).
"""

from __future__ import annotations

import csv
import sys
from typing import Any

from gasguard.tools import exitcodes

CSV_FIELDS = (
    "incident", "site", "device", "level", "detectors", "peak_lel", "stage", "opened_at",
    "valve_closed_at", "acknowledged_at", "cleared_at", "reset_at", "closed_at",
    "to_valve_closed_s", "to_acknowledged_s", "to_cleared_s", "to_reset_s", "duration_s",
    "open_event",
)  # fmt: skip


def main_export(args: Any) -> int:
    from gasguard.regulator import views
    from gasguard.regulator.store import StoreUnreachable

    try:
        store = views.open_reader(args.db)
    except ValueError as e:  # not a regulator database (NotOurDatabase), or a bad URL
        print("gasguard regulator export: %s" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    except StoreUnreachable as e:
        print("gasguard regulator export: database unreachable: %s" % e, file=sys.stderr)
        return exitcodes.UNREACHABLE
    try:
        rows = store.rows(
            "SELECT %s FROM incidents ORDER BY opened_at, open_event" % views.INCIDENT_FIELDS
        )
    finally:
        store.close()
    at = views.now()
    f = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for n, r in enumerate(rows, 1):
            r = views.incident_row(r, at)
            r["incident"], r["duration_s"] = n, r["to_closed_s"]
            r["detectors"] = " ".join(str(d + 1) for d in r["detectors"])  # as people count
            w.writerow(r)
    finally:
        if args.out:
            f.close()
    if args.out:
        print("%d incidents written to %s" % (len(rows), args.out), file=sys.stderr)
    return exitcodes.OK


def register(sub: Any) -> None:
    from gasguard.regulator.api import register_api
    from gasguard.regulator.command import register_ingest  # none of these loads a driver
    from gasguard.regulator.console import register_watch

    r = sub.add_parser("regulator", help="the regulator's end: ingest, console, API, export")
    rs = r.add_subparsers(dest="action", required=True)
    register_ingest(rs)
    register_watch(rs)
    register_api(rs)
    e = rs.add_parser("export", help="write the store's incidents as CSV")
    e.add_argument(
        "--db", "--ledger", dest="db", required=True,
        help="postgresql://... or the ingest's SQLite file (the demo's --ledger)",
    )  # fmt: skip
    e.add_argument("--out", help="CSV file (default: stdout)")
    e.set_defaults(run=main_export)
