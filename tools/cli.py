"""gasguard: the command line for installers, testers and regulators.

Exit codes: 0 ok, 1 the thing checked failed (or missed its target), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import sys

from gasguard.protocol import PROTOCOL_VERSION

VERSION = "0.1.0"


def _bench(args: argparse.Namespace) -> int:
    if args.name == "firmware-heap":
        from gasguard.tools import bench_heap

        out = bench_heap.run(args.json, args.cycles)
        print(bench_heap.table(out))
        missed = []
        if out["bytes_per_cycle"] != 0 or out["locked_alloc_failures"] != 0:
            missed.append("the steady-state cycle allocates")
        if not out["fits_110k"]:
            missed.append("the firmware does not boot in a 110k heap")
        elif out["heap_free_pct"] is None or out["heap_free_pct"] < 50:
            missed.append("less than 50 % of the heap free")
        for m in missed:
            print("target missed: " + m, file=sys.stderr)
        return 1 if missed else 0
    if args.name == "alarm-latency":
        from gasguard.tools import bench_latency

        out = bench_latency.run(args.json, args.samples)
        print(bench_latency.table(out))
        missed = []
        if out["live"]["p99_ms"] > 250:
            missed.append("live p99 above 250 ms")
        if out["one_dead"]["p99_ms"] > 400:
            missed.append("one-dead p99 above 400 ms")
        for m in missed:
            print("target missed: " + m, file=sys.stderr)
        return 1 if missed else 0
    print("gasguard bench: unknown benchmark %r" % args.name, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gasguard", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version",
        action="version",
        version="gasguard %s, link protocol v%d" % (VERSION, PROTOCOL_VERSION),
    )
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("bench", help="run a benchmark and write its figures as JSON")
    b.add_argument("name", choices=["firmware-heap", "alarm-latency"], help="which benchmark")
    b.add_argument("--json", metavar="FILE", help="write the figures here")
    b.add_argument("--cycles", type=int, default=500, help="firmware-heap: cycles to measure")
    b.add_argument("--samples", type=int, default=200, help="alarm-latency: leaks per run")
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
