"""The gateway's own entry: `python -m gasguard.gateway --config FILE`, and what `gasguard gateway`
delegates to. It imports nothing from tools/, so a site box needs only the gateway's extra."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _add_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("action", nargs="?", choices=["run", "status", "record"], default="run")
    g.add_argument("what", nargs="*", metavar="add FILE | list",
                   help="record: add a signed commissioning record file for delivery, or list "
                   "the records held")  # fmt: skip
    g.add_argument("--config", required=True, type=Path, help="gateway config (TOML)")
    g.add_argument("--json", action="store_true", help="status: print the raw JSON")
    g.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def register(sub: Any) -> None:
    """Adds `gateway` to a subparsers object (gasguard's command line)."""
    g = sub.add_parser(
        "gateway",
        help="run the site gateway, or show a running one's status",
        epilog="here:\n"
        "  gateway status: 3 when no gateway answers at the config's [status] listen\n"
        "  gateway record add FILE: 2 a record the gateway will not carry (the line says why),\n"
        "  1 not committed (a full disk: nothing added)\n"
        "  gateway run (a service): a failure it cannot survive exits with a sysexits code\n"
        "  for the service manager (gateway/exits.py: 2 config, 70 software, 71 OS error,\n"
        "  73 cannot create, 74 I/O error)",
    )
    _add_arguments(g)
    g.set_defaults(run=run)


def _status(cfg: Any, as_json: bool) -> int:
    import json
    import urllib.request

    if cfg.status is None:
        print("gasguard gateway status: the config has no [status] listen", file=sys.stderr)
        return 2
    url = "http://%s:%d/status" % (cfg.status.host, cfg.status.port)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            st = json.load(r)
    except OSError as e:
        print("gasguard gateway status: no gateway answers at %s (%s)" % (url, e), file=sys.stderr)
        return 3  # the gasguard convention (tools/exitcodes.py, which a site box lacks)
    if as_json:
        print(json.dumps(st, indent=2))
    else:
        from gasguard.gateway.status import render

        print(render(st))
    return 0


def _record(cfg: Any, what: list[str], as_json: bool) -> int:
    """`gateway record add FILE`: a signed commissioning record, checked at the gateway's border
    (gateway/recordcheck.py) and committed to the state directory before it says "added"; the
    running gateway publishes it within a second or two, or at its next start. Whoever may
    write the gateway's state directory (its service account) may add one; the regulator
    judges the signature. `gateway record list`: what is held and whether it was delivered."""
    import json

    from gasguard.gateway import recordcheck, statedir
    from gasguard.gateway.records import Records

    def fail(code: int, msg: str) -> int:
        if as_json:
            print(json.dumps({"ok": False, "error": msg, "exit_code": code}))
        else:
            print("gasguard gateway record: %s" % msg, file=sys.stderr)
        return code

    if not what or what[0] not in ("add", "list") or len(what) != (2 if what[0] == "add" else 1):
        return fail(2, "usage: gasguard gateway record add FILE | record list --config FILE")
    import os
    import sqlite3

    try:
        statedir.prepare(cfg.state_dir)
        owner = os.stat(cfg.state_dir).st_uid
        if what[0] == "add" and owner != os.geteuid():
            # a file another user made here would stop the gateway's service account at start
            import pwd

            try:
                name = pwd.getpwuid(owner).pw_name
            except KeyError:
                name = str(owner)
            return fail(2, "run it as the gateway's user, who owns %s: sudo -u %s gasguard "
                        "gateway record add ..." % (cfg.state_dir, name))  # fmt: skip
        records = Records(cfg.state_dir)
    except Exception as e:  # noqa: BLE001 - Fatal or sqlite3.Error: say it in one line
        return fail(2, "state directory %s: %s" % (cfg.state_dir, getattr(e, "message", e)))
    try:
        if what[0] == "list":
            held = records.listing()
            if as_json:
                print(json.dumps(held, indent=1))
            for r in [] if as_json else held:
                print("%s  %s  finished %s  %s" % (r["device"], r["record_id"], r["finished_at"],
                                                   r["state"]))  # fmt: skip
            return 0
        path = Path(what[1])
        try:
            with path.open("rb") as f:
                raw = f.read(recordcheck.MAX_FILE + 1)
        except OSError as e:
            return fail(2, "%s: %s" % (path, e.strerror or e))
        try:
            c = recordcheck.check(raw, cfg.site, frozenset(cfg.keys))
            compact = json.dumps(c.record, ensure_ascii=False, separators=(",", ":"))
            done = records.add(c, compact)
        except recordcheck.Refused as e:
            return fail(2, "%s: refused: %s" % (path, e))
        except sqlite3.Error as e:  # a full disk, a lock held past the timeout: rolled back
            return fail(1, "%s: not added: %s: %s" % (path, records.path, e))
        msg = "%s: %s for %s (record %s, finished %s); delivered by the running gateway" % (
            path, done, c.device, c.record_id, c.finished_at)  # fmt: skip
        if as_json:
            print(json.dumps({"ok": True, "result": done, "device": c.device,
                              "record_id": c.record_id, "digest": c.digest}))  # fmt: skip
        else:
            print(msg)
        return 0
    finally:
        records.close()


def run(args: argparse.Namespace) -> int:
    from gasguard.gateway import config as gwconfig

    try:
        cfg = gwconfig.load(args.config)
    except gwconfig.ConfigError as e:
        print("gasguard gateway: %s: %s" % (args.config, e), file=sys.stderr)
        return 2
    if args.action == "status":
        return _status(cfg, args.json)
    if args.action == "record":
        return _record(cfg, args.what, args.json)
    if args.what:
        print("gasguard gateway: unexpected arguments: %s" % " ".join(args.what), file=sys.stderr)
        return 2
    import asyncio
    import json
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

    async def serve() -> None:
        await Gateway(cfg).run_until_signalled(ready)

    # a failure that cannot be survived exits non-zero (sysexits, gateway/exits.py), so that a
    # service manager's restart-on-failure starts it again
    try:
        asyncio.run(serve())
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
    parser = argparse.ArgumentParser(prog="gasguard gateway")
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
