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


@pytest.mark.parametrize(
    "pointer,boots",
    [
        (b"\xff\xfe\x00", "kitchen-old"),  # no text at all: an install that exists (gg/a)
        (b"zz-not-there", "kitchen-old"),  # a name with no install and no second name
        (b"b zz", "kitchen-old"),  # gg/b removed: the first install that exists
        (None, "kitchen-old"),  # gg/current a directory
    ],
    ids=["binary", "no-such-install", "first-gone", "a-directory"],
)
def test_garbage_in_the_pointer_still_boots_an_install_with_the_valve_safe(
    make_board, pointer, boots
):
    """Issue 22 attack L5: gg/current with bytes that are no text, or naming no install, stopped
    main.py before the safe core (UnicodeError, ImportError): outputs undriven."""
    b = _running_with_valve_open(make_board, copy.deepcopy(NC))
    _two_installs(b)
    ptr = b.flash / "gg" / "current"
    if pointer is None:
        ptr.unlink()
        ptr.mkdir()
        (ptr / "x").write_text("b a")
    else:
        if pointer.startswith(b"b "):
            shutil.rmtree(b.flash / "gg" / "b")
        ptr.write_bytes(pointer)
    mark = _reboot_into(b)
    b.wait_line("GASGUARD RUNNING " + boots, 15, start=mark)
    assert not [x for x in b.lines[mark:] if x.startswith(("Traceback", "BOOT FAILED"))]
    b.wait_output("valve", 0, 5)
    time.sleep(0.5)
    assert not b.valve_open


def test_a_pointer_naming_nothing_that_exists_boots_the_root_install(make_board):
    b = _running_with_valve_open(make_board, copy.deepcopy(NC))
    (b.flash / "gg").mkdir()
    (b.flash / "gg" / "current").write_bytes(b"a \xc3(")  # gg/a does not exist
    mark = _reboot_into(b)
    b.wait_line("GASGUARD RUNNING", 15, start=mark)
    b.wait_output("valve", 0, 5)
    time.sleep(0.5)
    assert not b.valve_open
