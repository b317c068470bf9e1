"""`gasguard regulator screenshots`: the command the docs' pictures come from, run as a reader
would into a new directory: a PNG of every page it lists, each the browser's size and more than
a blank or one-colour page; without a Chinese font it refuses rather than save empty boxes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from gasguard.regulator.web.screenshots import PAGES, VIEWPORT

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                                "(scripts/setup.sh installs it)")  # fmt: skip
CMD = [sys.executable, "-m", "gasguard.tools.cli", "regulator", "screenshots", "--out"]


def test_a_png_of_every_page_and_none_blank(tmp_path):
    from PIL import Image, ImageStat

    out = tmp_path / "img"
    r = subprocess.run(CMD + [str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted("%s.png" % n for n, _, _ in PAGES)
    for name, _, _ in PAGES:
        with Image.open(out / ("%s.png" % name)) as img:
            assert img.size == (VIEWPORT["width"], VIEWPORT["height"]), name
            body = img.convert("L").crop((0, 60, img.width, 400))  # below the header bar
            assert ImageStat.Stat(body).stddev[0] > 10, name  # text and tables, not one colour
            assert len(body.getcolors(1 << 16) or ()) > 20, name  # anti-aliased glyphs


def test_without_a_chinese_font_it_refuses(tmp_path):
    empty = tmp_path / "fonts.conf"
    empty.write_text('<?xml version="1.0"?><fontconfig><dir>%s</dir></fontconfig>' % tmp_path)
    r = subprocess.run(CMD + [str(tmp_path / "img")], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, FONTCONFIG_FILE=str(empty)))  # fmt: skip
    assert r.returncode == 2 and "no Chinese (CJK) font" in r.stderr
    assert not (tmp_path / "img").exists()
