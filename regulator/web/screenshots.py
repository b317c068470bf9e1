"""`gasguard regulator screenshots --out DIR`: a PNG of each console page, for the docs.

It seeds the sample city (regulator/sample.py) into a SQLite ledger of its own, serves the
console on a free loopback port and takes each page in Debian's headless chromium (driven by
Playwright, which never downloads a browser), in Chinese. A page added to the console is one
line in PAGES.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gasguard.tools import exitcodes

PROG = "gasguard regulator screenshots"
# file name, path, what to wait for beyond the load (None: nothing). The login is taken before
# logging in; every other page as the sample city's account sees it.
PAGES = [
    ("login", "/login", None),
    ("overview", "/overview", "#alarm-chart .main-svg"),  # the chart drawn
    ("map", "/overview#map", "#unit-map canvas"),  # scrolled to the map, drawn
    ("compliance", "/compliance", None),
    ("alarms", "/alarms", "#live:text('实时')"),  # the live stream connected
    ("unit", "/units/sh-xuhui-0042", None),
    ("hazards", "/hazards", None),
    ("gateways", "/gateways", None),
]
VIEWPORT = {"width": 1280, "height": 800}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise ValueError("needs Debian's chromium (bash scripts/setup.sh installs it)")
    return found


def check_cjk_font() -> None:
    """Without a CJK font chromium draws Chinese as empty boxes: refuse rather than save those."""
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True,
                             timeout=30, check=False).stdout  # fmt: skip
    except OSError:
        out = ""
    if not out.strip():
        raise ValueError("no Chinese (CJK) font installed: the pages would show empty boxes "
                         "(bash scripts/setup.sh installs fonts-wqy-zenhei)")  # fmt: skip


def take(browser: Any, base: str, out: Path, name: str, password: str,
         pages: list = PAGES) -> list[Path]:  # fmt: skip
    """Each page as out/NAME.png; the login page logged out, the rest logged in."""
    ctx = browser.new_context(base_url=base, locale="zh-CN", viewport=VIEWPORT,
                              timezone_id="Asia/Shanghai")  # fmt: skip
    written = []
    try:
        page = ctx.new_page()
        for file, path, ready in pages:
            if path != "/login" and "/login" in page.url:
                page.fill("input[name=name]", name)
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_url("**/alarms")
            r = page.goto(path, wait_until="load")
            if r is None and "#" in path:  # the same page scrolled to an anchor: no request
                page.wait_for_timeout(300)  # smooth scrolling settles
            elif r is None or r.status != 200:
                raise RuntimeError("%s: HTTP %s" % (path, r and r.status))
            if ready:
                page.wait_for_selector(ready, timeout=10_000)
            page.evaluate("document.fonts.ready")
            target = out / ("%s.png" % file)
            page.screenshot(path=str(target), full_page=False)
            written.append(target)
    finally:
        ctx.close()
    return written


def run(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from ..sample import seed_city
    from ..store import open_store
    from . import serving
    from .app import create_console

    exe = chromium()
    check_cjk_font()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gasguard-shots-") as tmp:
        db = str(Path(tmp) / "ledger.db")
        store = open_store(db, create=True)
        try:
            name, password = seed_city(store)
        finally:
            store.close()
        app = create_console(db, zone="Asia/Shanghai")
        with serving.in_thread(app) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            try:
                return take(browser, base, out, name, password)
            finally:
                browser.close()


def register_screenshots(rs: Any) -> Any:
    from gasguard.tools.exitcodes import epilog

    p = rs.add_parser(
        "screenshots", help="a PNG of each web console page (the sample city, headless chromium)",
        epilog=epilog("here:\n  2  no chromium or no Chinese font, --out not a directory"),
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="the directory for the PNGs")
    p.set_defaults(run=main)
    return p


def main(args: Any) -> int:
    if args.out.exists() and not args.out.is_dir():
        print("%s: --out %s: not a directory" % (PROG, args.out), file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        written = run(args.out)
    except ValueError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.BAD_INPUT
    for path in written:
        print(path)
    return exitcodes.OK
