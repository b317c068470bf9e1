"""`gasguard regulator ingest`: the stream into PostgreSQL or SQLite, by N worker processes.

The parent checks the arguments (exit 2), makes the tables and reaches the broker (exit 3 if it
cannot), then runs the workers and watches them: when one ends, it stops the others and exits
with that worker's code, for systemd (or whatever runs it) to restart the whole ingest.
Importing this module loads neither paho nor psycopg: `gasguard --help` stays light.
"""

from __future__ import annotations

import argparse
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
        "--no-retained",
        action="store_true",
        help="leave retained state and gateway status to another machine's ingest",
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
        open_store(cfg.db, create=True).close()
    except NotOurDatabase as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return EXIT_USAGE
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (PROG, e), file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        _reach(cfg.host, cfg.port)
        drain = _stale_workers(cfg)
    except (ConnectionError, BrokerUnreachable) as e:
        print("%s: broker unreachable: %s" % (PROG, e), file=sys.stderr)
        return EXIT_UNREACHABLE
    return supervise(cfg, drain)


def _stale_workers(cfg: Any) -> list[int]:
    """The workers of this group and node that are no longer run but whose sessions the
    broker keeps (an earlier start with more workers, whatever database it wrote to): each
    still holds its share of the shared subscriptions, so the broker goes on queueing every
    N-th message in it. Asked of the broker, not remembered: only it knows."""
    import ssl

    from .mqttseam import held_sessions

    tls = ssl.create_default_context(cafile=cfg.ca_file) if cfg.tls else None
    ids = {cfg.client_id(i): i for i in range(cfg.workers, MAX_WORKERS)}
    held = held_sessions(cfg.host, cfg.port, list(ids), tls=tls, username=cfg.username,
                         password=cfg.password)  # fmt: skip
    return sorted(ids[c] for c in held)


def supervise(cfg: Any, drain: list[int] | range = range(0)) -> int:
    """Run the workers, and a drainer for each index in `drain`: with fewer workers than
    last time, the broker still holds the dropped workers' sessions and the messages it queued
    in them (a shared subscription's share included); a drainer stores those, then ends the
    session."""
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
        ctx.Process(target=worker.main, args=(cfg, i, True), name="drain-%d" % i, daemon=False)
        for i in drain
    ]
    for p in procs + drainers:
        p.start()
    print("%s: %d workers in group %s" % (PROG, cfg.workers, cfg.group), flush=True)
    code = 0
    while not stopping:
        if drainers and all(p.exitcode is not None for p in drainers):
            if all(p.exitcode == 0 for p in drainers):
                print("%s: the sessions of workers no longer run are drained" % PROG, flush=True)
            drainers = []  # one that failed keeps its session: the next start finds it again
        ended = [p for p in procs if p.exitcode is not None]
        if ended:
            code = ended[0].exitcode or 0
            code = code if code >= 0 else 1  # killed by a signal: a failure
            print("%s: %s ended (exit %d): stopping" % (PROG, ended[0].name, code),
                  file=sys.stderr)  # fmt: skip
            break
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


def main(argv: list[str] | None = None) -> int:
    """`python -m gasguard.regulator ingest ...`, until `gasguard regulator` registers it."""
    from .compliance import register_compliance
    from .registry import register_import

    parser = argparse.ArgumentParser(prog="gasguard regulator")
    sub = parser.add_subparsers(dest="action", required=True)
    register_ingest(sub)
    register_import(sub)
    register_compliance(sub)
    args = parser.parse_args(argv)
    return args.run(args)
