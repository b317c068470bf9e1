"""`gasguard regulator notify`: the deliverer service (regulator/notify/deliver.py).

Exit 2: a bad --db or config (every problem with its line); 3: the database unreachable at
start. SIGTERM or Ctrl-C: in-flight sends finish (or time out), then it exits 0. --counts
prints the outbox by status as JSON and exits (a failed count above 0 needs a person).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from gasguard.tools import exitcodes

PROG = "gasguard regulator notify"


def register_notify(rs: Any) -> Any:
    p = rs.add_parser("notify", help="send notifications: escalation chains, outbox, forwarding")
    p.add_argument("--db", required=True, help="postgresql://... or the ingest's SQLite file")
    p.add_argument("--config", required=True, help="notify.toml (docs/regulator.md, Notify)")
    p.add_argument("--counts", action="store_true", help="print the outbox's counts and exit")
    p.set_defaults(run=main_notify)
    return p


def main_notify(args: Any) -> int:
    from ..store import NotOurDatabase, StoreUnreachable, check_url, is_postgres, open_store
    from . import config, outbox
    from .deliver import Deliverer

    try:
        check_url(args.db)
        cfg = config.load(args.config)
        store = open_store(args.db)
    except (ValueError, NotOurDatabase) as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.BAD_INPUT
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.UNREACHABLE
    if args.counts:
        print(json.dumps(outbox.counts(store)))
        store.close()
        return exitcodes.OK
    store.close()

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        d = Deliverer(lambda: open_store(args.db), cfg, log=log,
                      postgres_url=args.db if is_postgres(args.db) else None)  # fmt: skip
        log("%s: delivering (%d channels, chains: %s)"
            % (PROG, len(cfg.channels), ", ".join(sorted(cfg.chains)) or "none"))  # fmt: skip
        await d.run(stop)

    asyncio.run(main())
    return exitcodes.OK
