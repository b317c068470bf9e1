"""`gasguard vboard`: one virtual board from the command line. The simulator (pymodbus, the
MicroPython VM) is imported only when it runs, not for `gasguard --help`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    v = sub.add_parser("vboard", help="run one virtual board; prints its endpoints as JSON")
    v.add_argument("--config", required=True, type=Path, help="device config (JSON)")
    v.add_argument("--key", type=Path, help="key file (hex); default: the config's key_hex")
    v.add_argument("--flash", type=Path, help="flash directory kept across runs (default: temp)")
    v.add_argument(
        "--bus",
        choices=["sim", "external"],
        default="sim",
        help="sim: simulated detectors driven via the control endpoint; external: a pty for "
        "your own detector simulator",
    )
    v.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gasguard.tools.sim import vboard_service

    return vboard_service.serve(args.config, args.key, args.flash, args.bus)
