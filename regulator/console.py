"""`gasguard regulator watch`: the regulator's console on the ingest's store.

It never subscribes to MQTT: the ingest is the only subscriber, so a console cannot take events
from it or from another console, and any number of consoles see the same thing. It looks at the
store every --every seconds and redraws only when something changed since its last look (or its
ages went stale): totals first, then sites and gateways offline, then the open incidents, most
severe and oldest first. The output is bounded: on a terminal one screen, redrawn in place; in a
log or pipe one summary per change, at most one per interval.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from gasguard.tools import exitcodes, human

from . import views

PROG = "gasguard regulator watch"
STALE_S = 30.0  # redraw at least this often even when nothing changed: the ages move on
LOG_INCIDENTS = 10  # incidents in a summary written to a log or pipe


def register_watch(rs: Any) -> None:
    w = rs.add_parser(
        "watch",
        help="the console: totals, sites and gateways offline, open incidents (from --db)",
        epilog="here:\n  2  --db is not a regulator database (the ingest makes one), or a bad"
        " filter\n  3  the database cannot be reached\n"
        "times are shown in this machine's local time, with its offset from UTC",
    )
    w.add_argument("--db", required=True, help="postgresql://... or the ingest's SQLite file")
    w.add_argument("--site", help="one site only")
    w.add_argument("--district", help="one district (id or name) and everything under it")
    w.add_argument("--state", choices=views.STATES, default="open",
                   help="which incidents (default: open, every stage but closed)")  # fmt: skip
    w.add_argument("--every", type=float, help="seconds between looks (1; 10 off a terminal)")
    w.add_argument("--once", action="store_true", help="print one snapshot and exit")
    w.add_argument("--json", action="store_true", help="JSON snapshots (one a line), nothing else")
    w.add_argument("--duration", type=float, help="stop after this many seconds")
    w.set_defaults(run=main_watch)


def age(seconds: float | None) -> str:
    if seconds is None:
        return human.MISSING
    s = int(max(0, seconds))
    if s < 3600:
        return "%dm %02ds" % divmod(s, 60)
    if s < 86400:
        return "%dh %02dm" % (s // 3600, s % 3600 // 60)
    return "%dd %02dh" % (s // 86400, s % 86400 // 3600)


def _more(shown: int, total: int) -> list[str]:
    return ["  … and %d more" % (total - shown)] if total > shown else []


def render(snap: dict[str, Any], height: int | None = None) -> str:
    """The snapshot as text, at most `height` lines (None: a log summary, LOG_INCIDENTS kept)."""
    t = snap["totals"]
    f = snap["filters"]
    where = ", ".join("%s %s" % (k, v) for k, v in f.items() if v and (k, v) != ("state", "open"))
    lines = [
        "%s%s" % (human.local_time(snap["at"]), "  [%s]" % where if where else ""),
        "sites %d (registered units %s) | devices %d: online %d, offline %d, no state yet %d"
        % (t["sites"], human.figure(t["units"]), t["devices"], t["online"], t["offline"],
           t["unknown"]),
        "open incidents: high %d, low %d | gateways offline %d of %d | rejected %d (%d kinds)"
        " | dead letters %d"
        % (t["open_incidents"]["high"], t["open_incidents"]["low"], t["gateways_offline"],
           t["gateways"], t["rejected"]["messages"], t["rejected"]["distinct"],
           t["dead_letters"]),
    ]  # fmt: skip
    each = 3 if height is None else max(1, min(5, height // 8))  # offline sites, gateways
    for title, items, show in (
        ("sites offline", snap["sites_offline"],
         lambda s: "%s (%d devices) since %s" % (s["site"], s["devices"],
                                                  human.local_time(s["since"]))),
        ("gateways offline", snap["gateways_offline"],
         lambda g: "%s/%s since %s" % (g["site"], g["gateway"], human.local_time(g["since"]))),
    ):  # fmt: skip
        if items:
            lines.append("%s: %d" % (title, len(items)))
            lines += ["  " + show(x) for x in items[:each]] + _more(each, len(items))
    label = "incidents (%s)" % f["state"] if f["state"] != "open" else "open incidents"
    lines.append("%s: %d" % (label, snap["incidents_total"]))
    # the incidents get what is left: the table's heading (2 lines) and an "and N more" line
    room = LOG_INCIDENTS if height is None else max(0, height - len(lines) - 3)
    incidents = snap["incidents"][:room]
    if incidents:
        table = human.table(
            ("LEVEL", "SITE/DEVICE", "STAGE", "OPENED", "AGE", "PEAK", "VALVE CLOSED"),
            ((i["level"].upper() if i["level"] == "high" else i["level"],
              "%s/%s" % (i["site"], i["device"]), i["stage"], human.local_time(i["opened_at"]),
              age(i["age_s"]), human.figure(i["peak_lel"], "%.0f %%LEL"),
              human.figure(i["to_valve_closed_s"], "+%.1fs")) for i in incidents),
        )  # fmt: skip
        lines += table.splitlines()  # as wide as the terminal: no indent of ours
    lines += _more(len(incidents), snap["incidents_total"])
    return "\n".join(lines if height is None else lines[:height])  # a narrow one wraps cells


def event_line(r: dict[str, Any]) -> str:
    """One stored event (an events row with its payload) as a line: local time, where, what,
    the reading, and what the board said beyond it (the demo's feed)."""
    d = json.loads(r["payload"]).get("data", {})
    extra = ""
    if r["lel"] is not None:
        extra = " %s %.1f %%LEL" % (human.detector(r["detector"]), r["lel"])
    elif "lel_invalid" in d:  # the board sent a reading nobody can use: say so
        extra = " %s READING INVALID (%s)" % (human.detector(r["detector"]), d["lel_invalid"])
    if d.get("over_range"):
        extra += " OVER RANGE"
    if r["kind"] == "events.lost":
        extra += " %s events lost on the board" % d.get("count", "?")
    return "%s %s/%s %s%s" % (human.local_time(r["time"]), r["site"], r["device"], r["kind"],
                              extra)  # fmt: skip


def incident_line(i: dict[str, Any]) -> str:
    what = i["stage"]
    if what == "closed":
        what = "closed (valve reset on site)" if i["reset_at"] else "closed (gas cleared)"
    return "incident %s/%s #%d %s" % (i["site"], i["device"], i["ordinal"], what)


class Watch:
    """Looks at the store and says what it shows when that changed. I/O injected: `out` gets a
    whole screen or summary (or a JSON line), `clock` tells the time."""

    def __init__(
        self,
        store: Any,
        filters: views.Filters,
        out: Callable[[str], None],
        *,
        as_json: bool = False,
        height: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.filters, self.out = store, filters, out
        self.as_json, self.height, self.clock = as_json, height, clock
        self.seen: tuple | None = None
        self.shown_at = -STALE_S

    def look(self) -> bool:
        """One look: says it (and returns True) if anything changed or the screen is stale."""
        mark = views.fingerprint(self.store)
        if mark == self.seen and self.clock() - self.shown_at < STALE_S:
            return False
        limit = self.height or LOG_INCIDENTS
        snap = views.snapshot(self.store, self.filters, limit=min(limit, views.LIMIT_MAX))
        self.seen, self.shown_at = mark, self.clock()
        self.out(json.dumps(snap) if self.as_json else render(snap, self.height))
        return True


def _terminal_out() -> tuple[Callable[[str], None], Callable[[], None]]:
    """Redraw one screen in place (rich's Live): the console never scrolls a log of itself."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    live = Live(Text(""), console=Console(), auto_refresh=False, screen=False,
                vertical_overflow="crop")  # fmt: skip
    live.start()
    return (lambda s: live.update(Text(s), refresh=True)), live.stop


def _reopen(store: Any, url: str) -> Any:
    """A new connection for the next look (a PostgreSQL connection once lost stays lost)."""
    from .store import StoreUnreachable

    try:
        fresh = views.open_reader(url)
    except StoreUnreachable:
        return store  # still away: the next look fails and comes here again
    try:
        store.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail too
        pass
    return fresh


def main_watch(args: Any) -> int:
    try:
        filters = views.Filters(site=args.site, district=args.district, state=args.state)
        if args.every is not None and not 0.1 <= args.every <= 3600:
            raise ValueError("--every: 0.1 to 3600 seconds")
    except ValueError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.BAD_INPUT
    from .store import StoreUnreachable, transient

    try:
        store = views.open_reader(args.db)
    except ValueError as e:  # not a regulator database (NotOurDatabase), or a bad URL
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.BAD_INPUT
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.UNREACHABLE
    tty = sys.stdout.isatty() and not args.json and not args.once
    every = args.every or (1.0 if tty else 10.0)
    out, done = (lambda s: print(s, flush=True)), (lambda: None)
    height = None
    if tty:
        out, done = _terminal_out()
        height = shutil.get_terminal_size((120, 24)).lines - 1
    w = Watch(store, filters, out, as_json=args.json, height=height)
    start = time.monotonic()
    try:
        while True:
            try:
                w.look()
            except views.NoRegistry as e:
                print("%s: --%s" % (PROG, e), file=sys.stderr)
                return exitcodes.BAD_INPUT
            except Exception as e:  # noqa: BLE001 - a lost database is retried, not the end
                if args.once or not transient(e):
                    raise
                print("%s: database: %s; retrying" % (PROG, str(e).strip()[:200]),
                      file=sys.stderr)  # fmt: skip
                w.store = store = _reopen(store, args.db)
            if args.once or (args.duration is not None
                             and time.monotonic() - start >= args.duration):  # fmt: skip
                return exitcodes.OK
            time.sleep(every)
    except KeyboardInterrupt:
        return exitcodes.OK
    finally:
        done()
        store.close()
