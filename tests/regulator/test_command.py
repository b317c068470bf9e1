"""`ingest` hangs under `gasguard regulator` as tools/regulator.py builds it: the parent parser's
own default handler must not shadow ingest's."""

from __future__ import annotations

import argparse

from gasguard.regulator.command import main_ingest, register_ingest


def test_register_ingest_under_a_regulator_parser_with_its_own_default():
    parser = argparse.ArgumentParser(prog="gasguard")
    sub = parser.add_subparsers(dest="command")
    r = sub.add_parser("regulator")
    rs = r.add_subparsers(dest="action", required=True)
    register_ingest(rs)
    r.set_defaults(run=lambda args: "watch or export")  # what tools/regulator.py does
    args = parser.parse_args(
        ["regulator", "ingest", "--broker", "mqtt://127.0.0.1", "--db", "r.db", "--workers", "3"]
    )
    assert args.run is main_ingest
    assert (args.workers, args.group) == (3, "gasguard-ingest")
