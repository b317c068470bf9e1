"""What the hazard, audit and export tests share: a store of each kind with incidents and
findings written straight into their tables (the ingest and the compliance checks make them),
and the regulator command line as tools/regulator.py builds it."""

from __future__ import annotations

import argparse

from gasguard.regulator.audit import register_audit
from gasguard.regulator.export import register_export
from gasguard.regulator.hazards_cmd import register_hazards
from gasguard.regulator.store import open_store

NOW = "2026-11-30T12:00:00.000Z"


def made_store(db_url: str):
    """A regulator database (each test module's `store` fixture)."""
    return open_store(db_url, create=True)


def incident(store, open_event: str, *, site: str = "s1", device: str = "d1",
             level: str = "high", opened_at: str = "2026-11-30T08:00:00.000Z",
             peak: float | None = 42.0) -> None:  # fmt: skip
    with store.transaction():
        store.x(
            "INSERT INTO incidents (open_event, site, device, instance, ordinal, level, stage, "
            "detectors, alarming, peak_lel, opened_at, last_event) "
            "VALUES (?,?,?,'i',1,?,'opened','[0]','[0]',?,?,?) "
            "ON CONFLICT (site, device, open_event) DO UPDATE SET level = excluded.level, "
            "peak_lel = excluded.peak_lel",
            (open_event, site, device, level, peak, opened_at, open_event),
        )


def finding(store, site: str, kind: str, *, subject: str = "", detail: str = "as found",
            since: str = "2026-11-20T00:00:00.000Z",
            cleared_at: str | None = None) -> None:  # fmt: skip
    with store.transaction():
        store.x(
            "INSERT INTO findings VALUES (?,?,?,?,?,?) ON CONFLICT (site, subject, kind) "
            "DO UPDATE SET detail = excluded.detail, cleared_at = excluded.cleared_at",
            (site, subject, kind, detail, since, cleared_at),
        )


def run(*argv: str) -> int:
    """`gasguard regulator ...` in this process, as tools/regulator.py will register it."""
    parser = argparse.ArgumentParser(prog="gasguard")
    sub = parser.add_subparsers(dest="command")
    rs = sub.add_parser("regulator").add_subparsers(dest="action", required=True)
    register_hazards(rs)
    register_export(rs)
    register_audit(rs)
    args = parser.parse_args(["regulator", *argv])
    return args.run(args)
