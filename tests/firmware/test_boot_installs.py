"""Two installs on a board (docs/firmware.md, "Installs"): gg/current names the install to boot
and the one before it. A new install that does not load (a module missing or broken, even its
safe core) gives way to the previous one at the next boot, the valve safe throughout; when
neither loads, the boot still ends with the valve safe."""

import copy
import json
import shutil
import time

import pytest

from .test_boot_failsafe import LATCHING, NC, _ends_safe, _reboot_into, _running_with_valve_open


def _two_installs(b, missing_new=(), missing_old=()):
    """gg/a: the running firmware as "kitchen-old"; gg/b: the same as "kitchen-new" without
    the files in missing_new; gg/current names b, then a. The bench's root install goes, so no
    module can come from it."""
    for name, device, missing in (("a", "kitchen-old", missing_old),
                                  ("b", "kitchen-new", missing_new)):  # fmt: skip
        d = b.flash / "gg" / name
        shutil.copytree(b.flash / "lib", d / "lib")
        cfg = json.loads((b.flash / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(dict(cfg, device_id=device)))
        for f in ("key.hex", "board.json"):
            shutil.copy(b.flash / f, d / f)
        for f in missing:
            (d / f).unlink()
    (b.flash / "gg" / "current").write_text("b a")
    shutil.rmtree(b.flash / "lib")
    for f in ("config.json", "key.hex", "board.json"):
        (b.flash / f).unlink()


def _line_index(b, text, start, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        for i in range(start, len(b.lines)):
            if text in b.lines[i]:
                return i
        assert time.monotonic() < deadline, "no %r:\n%s" % (text, "\n".join(b.lines[start:]))
        time.sleep(0.05)


@pytest.mark.parametrize("missing", ["persist.mpy", "safe.mpy"])
@pytest.mark.parametrize("kind", ["latching", "nc"])
def test_a_new_install_that_does_not_load_gives_way_to_the_previous_one(make_board, kind, missing):
    b = _running_with_valve_open(make_board, copy.deepcopy(LATCHING if kind == "latching" else NC))
    _two_installs(b, missing_new=["lib/gasguard/" + missing])
    mark = _reboot_into(b)
    i = _line_index(b, "restarting into the previous one (a)", mark)
    assert b.lines[i].startswith("BOOT FAILED: ImportError") and missing[:-4] in b.lines[i]
    b.wait_line("GASGUARD RUNNING kitchen-old", 15, start=i)
    assert (b.flash / "gg" / "current").read_text().split() == ["a"]
    b.wait_output("valve", 0, 5)
    time.sleep(0.5)
    assert not b.valve_open  # closed by the boot, until a person resets it on site


@pytest.mark.parametrize("kind", ["latching", "nc"])
def test_when_neither_install_loads_the_valve_ends_safe(make_board, kind):
    b = _running_with_valve_open(make_board, copy.deepcopy(LATCHING if kind == "latching" else NC))
    gone = ["lib/gasguard/persist.mpy"]
    _two_installs(b, missing_new=gone, missing_old=gone)
    mark = _reboot_into(b)
    i = _line_index(b, "restarting into the previous one (a)", mark)
    line = _ends_safe(b, i + 1, "BOOT FAILED")
    assert "ImportError" in line and "previous" not in line
