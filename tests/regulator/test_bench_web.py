"""`gasguard bench web` at a tiny scale (the 50,000-unit run is by hand: docs/bench/web.json):
the command seeds, serves and loads every page as both accounts in the browser, and its JSON and
table say each page's load time against the 1 s target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from gasguard.tools.bench.bench_web import ACCOUNTS, PAGES

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                                "(scripts/setup.sh installs it)")  # fmt: skip


def test_a_small_city_is_measured_page_by_page(tmp_path):
    out_file = tmp_path / "web.json"
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "bench", "web", "--units", "300",
         "--visits", "1", "--backends", "sqlite", "--json", str(out_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = r.stdout + r.stderr
    assert r.returncode in (0, 1), said  # 1: a target missed on a busy machine
    out = json.loads(out_file.read_text())
    assert out["units"] == 300 and set(out["backends"]) == {"sqlite"}
    sqlite = out["backends"]["sqlite"]
    assert sqlite["rows"]["units"] == 300 and sqlite["rows"]["devices"] == 600
    assert set(sqlite["pages"]) == set(ACCOUNTS)
    for account, pages in sqlite["pages"].items():
        assert set(pages) == {name for name, _ in PAGES}, account
        for name, fig in pages.items():
            assert 0 < fig["server"]["median_ms"] <= fig["load"]["median_ms"], (account, name)
            assert fig["bytes"] > 1000, (account, name)
    assert "sqlite/city/hazards" in r.stdout and "load average" in r.stdout


def test_an_unknown_backend_is_refused():
    r = subprocess.run([sys.executable, "-m", "gasguard.tools.cli", "bench", "web",
                        "--backends", "oracle"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--backends" in r.stderr
