"""`gasguard bench web`: the web console's pages at a city's scale, loaded in a real browser.

A city of --units units (tools/bench/city_rows.py: 2 devices and a gateway a unit, 1 % with an
open alarm, a hazard ledger) is written into SQLite and into a PostgreSQL server of the bench's
own, the console served on loopback, and Debian's headless chromium logs in as the city's
account and as a street's and opens each page --visits times after one visit to warm up. A
page's load time runs from the navigation's start to the end of its load event (the browser's
Navigation Timing; the wall time around the visit where the browser has none), its server time
to the first byte of the answer. Target: every page's median load under 1 s (exit 1 if not).

The machine is measured as it is: the load average before and after each backend is in the
JSON, so a figure from a busy machine says so.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gasguard.tools import human
from gasguard.tools.bench import city_rows

TARGET_MS = 1000.0
# a page, as a city's account opens it (name, path); the unit is one the street account has too
PAGES = [
    ("overview", "/overview"),
    ("alarms", "/alarms"),
    ("hazards", "/hazards"),
    ("compliance", "/compliance"),
    ("gateways", "/gateways"),
    ("unit", "/units/" + city_rows.site_of(7)),
]
# what a page draws after it loads (its data fetched by script): timed to the last one drawn
DRAWN = {"overview": ("#alarm-chart[data-ready]", "#unit-map[data-ready]")}
ACCOUNTS = (city_rows.CITY_ACCOUNT, city_rows.STREET_ACCOUNT)
BACKENDS = ("sqlite", "postgresql")
_TIMING = ("(() => { const n = performance.getEntriesByType('navigation')[0];"
           " return n ? [n.responseStart - n.requestStart, n.loadEventEnd - n.startTime]"
           " : [null, null]; })()")  # fmt: skip


def _ms(xs: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(xs), 1), "max_ms": round(max(xs), 1)}


def visit_all(browser: Any, base: str, account: str, visits: int) -> dict[str, Any]:
    """Each page's load and server times as account sees them."""
    ctx = browser.new_context(base_url=base, locale="zh-CN")
    page = ctx.new_page()
    page.goto("/login")
    page.fill("input[name=name]", account)
    page.fill("input[name=password]", city_rows.PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/alarms")
    out: dict[str, Any] = {}
    try:
        for name, path in PAGES:
            loads, servers, drawn = [], [], []
            for n in range(visits + 1):
                t0 = time.perf_counter()
                r = page.goto(path, wait_until="load")
                wall = (time.perf_counter() - t0) * 1000
                if r is None or r.status != 200:
                    raise RuntimeError("%s as %s: HTTP %s" % (path, account, r and r.status))
                for selector in DRAWN.get(name, ()):
                    page.wait_for_selector(selector, state="attached", timeout=60_000)
                done = (time.perf_counter() - t0) * 1000
                server, load = page.evaluate(_TIMING)
                if n:  # the first visit warms the server's connection and caches
                    loads.append(load if load else wall)
                    servers.append(server if server is not None else wall)
                    drawn.append(done)
            out[name] = {"load": _ms(loads), "server": _ms(servers), "bytes": len(r.body())}
            if name in DRAWN:
                out[name]["drawn"] = _ms(drawn)
    finally:
        ctx.close()
    return out


def _store_url(backend: str, tmp: Path, servers: list) -> str:
    if backend == "sqlite":
        return str(tmp / "city.db")
    from gasguard.tools.sim.postgres import PostgresServer

    server = PostgresServer().start()
    servers.append(server)
    return server.create_database("bench_web")


def run(units: int, visits: int, backends: tuple[str, ...]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from gasguard.regulator.store import open_store
    from gasguard.regulator.web import serving
    from gasguard.regulator.web.app import create_console
    from gasguard.regulator.web.screenshots import chromium

    out: dict[str, Any] = {"units": units, "visits": visits, "target_ms": TARGET_MS,
                           "cores": os.cpu_count(), "backends": {}}  # fmt: skip
    servers: list = []
    with tempfile.TemporaryDirectory(prefix="gasguard-bench-web-") as tmp, \
            sync_playwright() as p:  # fmt: skip
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            for backend in backends:
                url = _store_url(backend, Path(tmp), servers)
                figures: dict[str, Any] = {"load_avg_before": os.getloadavg()[0]}
                store = open_store(url, create=True)
                t0 = time.perf_counter()
                try:
                    figures["rows"] = city_rows.seed(store, units)
                finally:
                    store.close()
                figures["seed_s"] = round(time.perf_counter() - t0, 2)
                with serving.in_thread(create_console(url)) as base:
                    figures["pages"] = {a: visit_all(browser, base, a, visits) for a in ACCOUNTS}
                figures["load_avg_after"] = os.getloadavg()[0]
                out["backends"][backend] = figures
        finally:
            browser.close()
            for s in servers:
                s.stop()
    return out


def slowest(out: dict[str, Any]) -> list[tuple[str, float]]:
    """(backend/account/page, median ms) for every page measured: its load, and for a page
    that draws after loading, until it has drawn."""
    out_rows = []
    for b, per in out["backends"].items():
        for a, pages in per["pages"].items():
            for page, fig in pages.items():
                out_rows += [("%s/%s/%s%s" % (b, a, page, " drawn" if what == "drawn" else ""),
                              fig[what]["median_ms"]) for what in ("load", "drawn") if what in fig]
    return out_rows


def run_args(args: Any) -> dict[str, Any]:
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or set(backends) - set(BACKENDS):
        print("gasguard bench web: --backends: some of %s" % ",".join(BACKENDS), file=sys.stderr)
        raise SystemExit(2)
    out = run(args.units, args.visits, backends)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    rows = [(name, ms, "pass" if ms < TARGET_MS else "MISS") for name, ms in slowest(out)]
    print(human.table(("page (backend/account/page)", "median load ms", "< 1 s"), rows,
                      title="%d units, %d visits a page" % (args.units, args.visits)))
    for b, per in out["backends"].items():
        print("%s: seeded in %.1f s; load average %.2f before, %.2f after"
              % (b, per["seed_s"], per["load_avg_before"], per["load_avg_after"]))
    return out


def missed(out: dict[str, Any]) -> list[str]:
    return ["%s: %.0f ms load (median), target under %.0f ms" % (name, ms, TARGET_MS)
            for name, ms in slowest(out) if ms >= TARGET_MS]  # fmt: skip
