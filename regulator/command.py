"""`gasguard regulator ingest`: the stream into PostgreSQL or SQLite, by N worker processes.

The parent checks the arguments (exit 2), makes the tables and reaches the broker (exit 3 if it
cannot), then runs the workers and watches them: when one ends, it stops the others and exits
with that worker's code, for systemd (or whatever runs it) to restart the whole ingest.
Importing this module loads neither paho nor psycopg: `gasguard --help` stays light.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fcntl
import os
import re
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gasguard.gateway.config import is_loopback, split_broker_url

from . import nodes

PROG = "gasguard regulator ingest"
GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # it goes into topic filters and client ids
MAX_WORKERS = 64  # a machine's worth; more load means more machines (--node)
EXIT_USAGE, EXIT_UNREACHABLE = 2, 3


def register_ingest(sub: Any) -> argparse.ArgumentParser:
    """Add `ingest` to the `regulator` command's subparsers."""
    p = sub.add_parser(
        "ingest", help="store the stream (events, state, gateway status) in PostgreSQL or SQLite"
    )
    p.add_argument("--broker", required=True, help="mqtts://HOST[:PORT] (mqtt:// on loopback)")
    p.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--group", default="gasguard-ingest", help="MQTT 5 shared subscription group")
    p.add_argument(
        "--node",
        default=socket.gethostname().split(".")[0][:32],
        help="this machine's name in the workers' client ids (default: the host name)",
    )
    p.add_argument(
        "--drain-node",
        action="append",
        default=[],
        metavar="NAME",
        help="a node of this group no longer run (renamed, moved, retired): store what its "
        "sessions hold and end them (refused if it was heard in the last 10 minutes)",
    )
    p.add_argument(
        "--no-retained",
        action="store_true",
        help="leave retained state, gateway status and commissioning records to another "
        "machine's ingest",
    )
    p.add_argument(
        "--notify-config",
        metavar="TOML",
        help="notify.toml: an incident's first messages are decided in the batch that opened it "
        "(the deliverer, `regulator notify`, sends them)",
    )
    p.add_argument("--username")
    p.add_argument("--password-file", help="file holding the MQTT password")
    p.add_argument("--ca-file", help="CA bundle that signed the broker's certificate")
    p.add_argument("--insecure-plaintext", action="store_true", help="allow mqtt:// off loopback")
    p.set_defaults(run=main_ingest)
    return p


def _config(args: Any):
    from .store import check_url
    from .worker import Config

    try:
        tls, host, port = split_broker_url(args.broker)
    except ValueError as e:
        raise ValueError("--broker %s" % e) from None
    if not tls and not is_loopback(host) and not args.insecure_plaintext:
        raise ValueError(
            "--broker: plaintext MQTT to a broker that is not on loopback; use mqtts:// "
            "(or --insecure-plaintext on a closed network)"
        )
    check_url(args.db)
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ValueError("--workers: 1 to %d" % MAX_WORKERS)
    for name in ("group", "node"):
        if not GROUP.match(getattr(args, name)):
            raise ValueError("--%s: 1-64 of A-Z a-z 0-9 _ . -" % name)
    for name in args.drain_node:
        if not GROUP.match(name) or name == args.node:
            raise ValueError("--drain-node %r: another node's name (1-64 of A-Z a-z 0-9 _ . -)"
                             % name)  # fmt: skip
    if args.notify_config:
        from .notify.config import load

        load(args.notify_config)  # ConfigError (a ValueError): every problem's line, exit 2
    password = None
    if args.password_file:
        password = Path(args.password_file).read_text().strip()
    return Config(
        host=host,
        port=port,
        tls=tls,
        db=args.db,
        group=args.group,
        node=args.node,
        workers=args.workers,
        retained=not args.no_retained,
        ca_file=args.ca_file,
        username=args.username,
        password=password,
        notify=args.notify_config,
    )


def _reach(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise ConnectionError("%s:%d: %s" % (host, port, e.strerror or e)) from None


def _claim(cfg: Any):
    """One ingest per group and node: a second one would reuse the workers' client ids, and an
    MQTT broker closes the older connection of an id when a newer one connects; the two would
    knock each other off for ever (mosquitto says nothing to the client it closes). Held by an
    flock on a file named after the ids, released when this process ends, however it ends."""
    path = os.path.join(
        tempfile.gettempdir(), "gasguard-ingest-%s-%s.lock" % (cfg.group, cfg.node)
    )
    f = open(path, "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise ValueError(
            "an ingest in group %s already runs on this machine as node %s (pid %s): its workers "
            "have these client ids; stop it, or give this one another --group or --node"
            % (cfg.group, cfg.node, f.read().strip() or "?")
        ) from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def main_ingest(args: Any) -> int:
    from .mqttseam import BrokerUnreachable
    from .store import NotOurDatabase, StoreUnreachable, open_store

    try:
        cfg = _config(args)
        lock = _claim(cfg)  # noqa: F841 - held until this process ends
    except (ValueError, OSError) as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return EXIT_USAGE
    try:
        store = open_store(cfg.db, create=True)
        try:
            retire = _nodes_at_start(store, cfg, args.drain_node)
        finally:
            store.close()
    except NotOurDatabase as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return EXIT_USAGE
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (PROG, e), file=sys.stderr)
        return EXIT_UNREACHABLE
    except ValueError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return EXIT_USAGE
    try:
        _reach(cfg.host, cfg.port)
        drain = [(cfg, i) for i in _stale_workers(cfg)]
        for name in retire:
            other = dataclasses.replace(cfg, node=name)
            drain += [(other, i) for i in _stale_workers(other, first=0)]
    except (ConnectionError, BrokerUnreachable) as e:
        print("%s: broker unreachable: %s" % (PROG, e), file=sys.stderr)
        return EXIT_UNREACHABLE
    return supervise(cfg, drain, retire)


def _nodes_at_start(store: Any, cfg: Any, retire: list[str]) -> list[str]:
    """Say this node runs; name the group's silent nodes; check --drain-node may take them."""
    now = datetime.datetime.now(datetime.UTC)
    silent = nodes.silent(store, cfg.group, cfg.node, now)
    for name in retire:
        seen = nodes.nodes(store, cfg.group).get(name)
        if seen is not None and name not in silent:
            raise ValueError(
                "--drain-node %s: it was heard at %s, less than %d minutes ago: stop it first "
                "(taking its sessions would knock it off)"
                % (name, seen["seen"].isoformat(timespec="seconds"), nodes.STALE_S // 60)
            )
    for name, r in sorted(silent.items()):
        if name not in retire:
            print("%s: node %s of group %s last ran at %s with %d workers; if it no longer "
                  "runs, the broker still shares events out to its sessions: start once with "
                  "--drain-node %s" % (PROG, name, cfg.group, r["seen"].isoformat(
                      timespec="seconds"), r["workers"], name), file=sys.stderr)  # fmt: skip
    nodes.beat(store, cfg.group, cfg.node, cfg.workers, now)
    return list(retire)


def _stale_workers(cfg: Any, first: int | None = None) -> list[int]:
    """The workers of this group and node from `first` (default: past --workers) that are not
    run but whose sessions the broker keeps (an earlier start with more workers, whatever
    database it wrote to): each still holds its share of the shared subscriptions, so the
    broker goes on queueing every N-th message in it. Asked of the broker, not remembered:
    only it knows."""
    import ssl

    from .mqttseam import held_sessions

    tls = ssl.create_default_context(cafile=cfg.ca_file) if cfg.tls else None
    start = cfg.workers if first is None else first
    ids = {cfg.client_id(i): i for i in range(start, MAX_WORKERS)}
    held = held_sessions(cfg.host, cfg.port, list(ids), tls=tls, username=cfg.username,
                         password=cfg.password)  # fmt: skip
    return sorted(ids[c] for c in held)


def supervise(cfg: Any, drain: list[tuple[Any, int]] | None = None,
              retired: list[str] | None = None) -> int:  # fmt: skip
    """Run the workers, and a drainer for each (config, index) in `drain`: a worker no longer
    run (fewer workers than last time, or a retired node's), whose session the broker still
    holds with the messages it queued there (a shared subscription's share included); a
    drainer stores those, then ends the session. Once they all have, the retired nodes are
    forgotten. Says this node is alive in the database once a minute (regulator/nodes.py)."""
    import multiprocessing

    from . import worker

    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    procs = [
        ctx.Process(target=worker.main, args=(cfg, i), name="ingest-%d" % i, daemon=False)
        for i in range(cfg.workers)
    ]
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    drainers = [
        ctx.Process(target=worker.main, args=(c, i, True), name="drain-%s-%d" % (c.node, i),
                    daemon=False)  # fmt: skip
        for c, i in drain or []
    ]
    for p in procs + drainers:
        p.start()
    print("%s: %d workers in group %s" % (PROG, cfg.workers, cfg.group), flush=True)
    code = 0
    beat = time.monotonic()
    while not stopping:
        if drainers and all(p.exitcode is not None for p in drainers):
            if all(p.exitcode == 0 for p in drainers):
                _forget(cfg, retired or [])
                print("%s: the sessions of workers no longer run are drained" % PROG, flush=True)
            drainers = []  # one that failed keeps its session: the next start finds it again
        ended = [p for p in procs if p.exitcode is not None]
        if ended:
            code = ended[0].exitcode or 0
            code = code if code >= 0 else 1  # killed by a signal: a failure
            print("%s: %s ended (exit %d): stopping" % (PROG, ended[0].name, code),
                  file=sys.stderr)  # fmt: skip
            break
        if time.monotonic() - beat > nodes.BEAT_S:
            beat = time.monotonic()
            _beat(cfg)
        time.sleep(0.2)
    for p in procs + drainers:
        if p.exitcode is None:
            p.terminate()  # SIGTERM: the worker finishes its batch and leaves
    for p in procs + drainers:
        p.join(15)
        if p.exitcode is None:
            p.kill()
            p.join()
    return code


def _beat(cfg: Any) -> None:
    from .store import open_store

    now = datetime.datetime.now(datetime.UTC)
    try:
        store = open_store(cfg.db)
        try:
            nodes.beat(store, cfg.group, cfg.node, cfg.workers, now)
        finally:
            store.close()
    except Exception as e:  # noqa: BLE001 - the workers say it louder; the next beat retries
        print("%s: could not say this node is alive: %s" % (PROG, e), file=sys.stderr)


def _forget(cfg: Any, retired: list[str]) -> None:
    from .store import open_store

    if not retired:
        return
    store = open_store(cfg.db)
    try:
        for name in retired:
            nodes.forget(store, cfg.group, name)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m gasguard.regulator ingest ...`, until `gasguard regulator` registers it."""
    from .compliance import register_compliance
    from .installers import register_installer
    from .registry import register_import

    parser = argparse.ArgumentParser(prog="gasguard regulator")
    sub = parser.add_subparsers(dest="action", required=True)
    register_ingest(sub)
    register_import(sub)
    register_compliance(sub)
    register_installer(sub)
    args = parser.parse_args(argv)
    return args.run(args)
