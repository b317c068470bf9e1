"""`gasguard regulator`: the regulator's end, on the ingest's store (regulator/).

`ingest` is the only thing that subscribes to the sites' streams; `watch`, `api`, `incidents`,
`hazards`, `compliance` and `export` read (and the ledger's commands change) what it stored.
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


def main_incidents(args: Any) -> int:
    from gasguard.regulator import views
    from gasguard.regulator.store import StoreUnreachable

    try:
        store = views.open_reader(args.db)
    except ValueError as e:  # not a regulator database (NotOurDatabase), or a bad URL
        print("gasguard regulator incidents: %s" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    except StoreUnreachable as e:
        print("gasguard regulator incidents: database unreachable: %s" % e, file=sys.stderr)
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
    # none of these loads a client or a driver: they load when their command runs
    from gasguard.regulator.api import register_api
    from gasguard.regulator.audit import register_audit
    from gasguard.regulator.command import register_ingest
    from gasguard.regulator.compliance import register_compliance
    from gasguard.regulator.console import register_watch
    from gasguard.regulator.export import register_export
    from gasguard.regulator.hazards_cmd import register_hazards
    from gasguard.regulator.installers import register_installer
    from gasguard.regulator.notify.command import register_notify
    from gasguard.regulator.registry import register_import
    from gasguard.regulator.reports.command import register_report
    from gasguard.regulator.web.accounts import register_user
    from gasguard.regulator.web.app import register_serve
    from gasguard.regulator.web.screenshots import register_screenshots

    r = sub.add_parser(
        "regulator",
        help="the regulator's end: ingest, registry, compliance, hazard ledger, console, API",
    )
    rs = r.add_subparsers(dest="action", required=True)
    register_ingest(rs)
    register_import(rs)
    register_compliance(rs)
    register_hazards(rs)
    register_installer(rs)
    register_audit(rs)
    register_export(rs)
    register_report(rs)
    register_notify(rs)
    register_watch(rs)
    register_api(rs)
    register_serve(rs)
    register_user(rs)
    register_screenshots(rs)
    e = rs.add_parser("incidents", help="write the store's incidents and their durations as CSV")
    e.add_argument(
        "--db", "--ledger", dest="db", required=True,
        help="postgresql://... or the ingest's SQLite file (the demo's --ledger)",
    )  # fmt: skip
    e.add_argument("--out", help="CSV file (default: stdout)")
    e.set_defaults(run=main_incidents)
