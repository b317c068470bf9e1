"""`gasguard flash` against a virtual board's REPL pty, through mpremote's serial transport: the
board then runs the flashed config, a second flash copies nothing, and a busy port, a silent port,
an old MicroPython and a bad config each get their own clear error."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest
import serial

from gasguard.tools.device import read_device_config
from gasguard.tools.installer.flash import FlashError, check_supported
from gasguard.tools.sim.vboard_service import VboardService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"


def flash(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "flash", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def factory_board():
    """A board as it leaves the bench: firmware on it, a placeholder identity and key."""
    cfg, _ = read_device_config(EXAMPLE)
    cfg["device_id"] = "unprovisioned"
    cfg["link"] = {"kind": "none"}
    with VboardService(cfg, bytes(range(32))) as svc:
        svc.board.wait_line("GASGUARD RUNNING unprovisioned", 20)
        yield svc


def site_config(svc: VboardService, tmp_path: Path) -> Path:
    cfg = json.loads(EXAMPLE.read_text())  # the board's ptys come from its environment
    cfg["link"] = {"kind": "none"}
    p = tmp_path / "kitchen-main.json"
    p.write_text(json.dumps(cfg))
    return p


def test_flashed_board_runs_the_new_config(factory_board, tmp_path):
    svc = factory_board
    b = svc.board
    cfg_path = site_config(svc, tmp_path)
    mark = len(b.lines)
    r = flash("--port", b.repl_path, "--config", str(cfg_path), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    # the firmware on the bench board was this build: only identity, key and pin map go over
    # the wire; the firmware is copied on the board into the new install
    assert sorted(report["copied"]) == ["board.json", "config.json", "key.hex"]
    assert report["skipped"] > 20 and report["seeded"] > 20
    assert report["verified"] and report["restarted"]
    assert report["running"].startswith("GASGUARD RUNNING hotpot-88-main")

    # it reboots and runs as the kitchen's board, with the kitchen's key and config
    line = b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)
    assert "cause soft" in line
    key = json.loads(EXAMPLE.read_text())["key_hex"]
    inst = b.installed()
    assert inst == svc.flash / "gg" / report["install"].removeprefix("gg/")
    assert (inst / "key.hex").read_text() == key
    on_board = json.loads((inst / "config.json").read_text())
    assert on_board["device_id"] == "hotpot-88-main" and "key_hex" not in on_board
    pinmap = json.loads((inst / "board.json").read_text())
    assert pinmap["pin"] == on_board["valve"]["pin"] and pinmap["red"] == on_board["pins"]["red"]
    b.wait_output("valve", 0, 5)  # closed after the restart until a person resets
    b.reset_until_open(hold_s=1.3)  # and it works: reset on site opens the valve
    assert b.outputs.get("valve") == 1

    # flashing the same again copies nothing; --dry-run writes nothing, and leaves the board
    # running (issue 22 attack H1: the probe's Ctrl-C had left its firmware stopped)
    mark = len(b.lines)
    again = flash("--port", b.repl_path, "--config", str(cfg_path), "--dry-run", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    rep = json.loads(again.stdout)
    assert rep["copied"] == [] and rep["dry_run"] and rep["restarted"]
    assert rep["running"].startswith("GASGUARD RUNNING hotpot-88-main")
    assert "0 files differ" in again.stderr  # --json: the words go to stderr
    assert "the board runs its firmware again" in again.stderr
    assert any(x.startswith("STOPPED from the console") for x in b.lines[mark:])
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)
    time.sleep(0.5)
    assert not b.maintenance  # the loop runs: the watchdog is fed, a leak is acted on


def test_changed_firmware_file_is_copied_and_verified(factory_board, tmp_path):
    svc = factory_board
    target = svc.flash / "lib" / "gasguard" / "safety.mpy"
    target.write_bytes(target.read_bytes()[:-7])  # a damaged or stale file on the board
    r = flash("--port", svc.board.repl_path, "--config", str(site_config(svc, tmp_path)), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert "lib/gasguard/safety.mpy" in report["copied"]
    svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)


def test_busy_port_is_named(factory_board, tmp_path):
    svc = factory_board
    holder = serial.Serial(svc.board.repl_path, exclusive=True)  # a serial monitor left open
    try:
        r = flash("--port", svc.board.repl_path, "--config", str(site_config(svc, tmp_path)))
    finally:
        holder.close()
    assert r.returncode == 3  # unreachable: close the other program
    assert "in use by another program" in r.stderr


def test_a_port_without_micropython_is_named(tmp_path):
    master, slave = os.openpty()  # something on the line that is not a MicroPython REPL
    tty.setraw(slave)
    try:
        r = flash("--port", os.ttyname(slave), "--config", str(EXAMPLE))
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 3  # nothing answers: check the cable and the port
    assert "nothing answered on" in r.stderr and "USB port" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_config_is_refused_before_touching_the_board(tmp_path):
    cfg = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    cfg["valve"]["kind"] = "ball"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    r = flash("--port", "/dev/nonexistent", "--config", str(p))
    assert r.returncode == 2
    assert "valve.kind" in r.stderr


@pytest.mark.parametrize(
    "info,words",
    [
        ({"platform": "esp32", "version": [1, 19, 1], "mpy": 6}, "needs 1.23 or later"),
        ({"platform": "esp32", "version": [1, 22, 2], "mpy": 0x206}, "bytecode v6.2"),
        ({"platform": "rp2", "version": [1, 29, 0], "mpy": 0xB06}, "GasGuard runs on ESP32"),
    ],
)
def test_unsupported_micropython_is_refused(info, words):
    with pytest.raises(FlashError) as e:
        check_supported(info)
    assert words in str(e.value)


def test_supported_micropython_passes():
    check_supported({"platform": "esp32", "version": [1, 24, 1], "mpy": 0x2B06})
    check_supported({"platform": "linux", "version": [1, 29, 0], "mpy": 0xB06})


def _write(tmp_path: Path, name: str, cfg: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


def _lpg_latching() -> dict:
    """The three configs the tester flashed with --dry-run (issue 19 item 7): a buzzer on a
    flash pin, a latching valve without backup power, an LPG detector at 2 m."""
    cfg = json.loads(EXAMPLE.read_text())
    cfg["gas"] = "lpg"
    for d in cfg["detectors"]:
        d["gas"] = "propane"
    for p in cfg["install"]["detectors"]:
        p["mount_height_m"], p["distance_m"] = 0.2, 3.0
    cfg["install"]["detectors"][0]["mount_height_m"] = 2.0
    cfg["valve"] = {"kind": "latching", "pin": 25, "position_pin": 26}
    cfg["pins"]["buzzer"] = 7
    return cfg


@pytest.mark.parametrize("extra", [[], ["--dry-run"]], ids=["flash", "dry-run"])
def test_flash_refuses_what_config_check_refuses(tmp_path, extra):
    p = _write(tmp_path, "lpg.json", _lpg_latching())
    check = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "config", "check", str(p), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    refused = {f["field"] for f in json.loads(check.stdout)["findings"] if f["level"] == "error"}
    assert refused == {
        "pins.buzzer", "install.backup_power", "install.detectors[0].mount_height_m",
    }  # fmt: skip
    # never reaches the board: the port does not even exist
    r = flash("--port", "/dev/nonexistent", "--config", str(p), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    for field in refused:  # every one at once, as config check names them
        assert field in r.stderr
    assert "the board is not flashed" in r.stderr and "Traceback" not in r.stderr


def test_override_never_covers_what_the_board_refuses(tmp_path):
    p = _write(tmp_path, "lpg.json", _lpg_latching())  # a buzzer on GPIO 7: no override
    r = flash("--port", "/dev/nonexistent", "--config", str(p), "--override", "UPS next week",
              "--installer", "Wang Wei")  # fmt: skip
    assert r.returncode == 2 and "the ESP32 cannot do" in r.stderr
    cfg = json.loads(EXAMPLE.read_text())
    cfg["alarm"]["close_on_lo"] = True  # a typo the board refuses at boot
    p = _write(tmp_path, "typo.json", cfg)
    r = flash("--port", "/dev/nonexistent", "--config", str(p), "--override", "it is fine",
              "--installer", "Wang Wei")  # fmt: skip
    assert r.returncode == 2 and "did you mean close_on_low?" in r.stderr
    r = flash("--port", "/dev/nonexistent", "--config", str(EXAMPLE), "--override", "  ")
    assert r.returncode == 2 and "needs the reason" in r.stderr


def test_an_override_is_kept_on_the_board_and_in_the_commissioning_record(factory_board, tmp_path):
    svc = factory_board
    b = svc.board
    cfg = json.loads(site_config(svc, tmp_path).read_text())
    cfg["install"]["detectors"][0]["mount_height_m"] = 2.6  # 0.6 m below the ceiling
    p = _write(tmp_path, "beam.json", cfg)
    r = flash("--port", b.repl_path, "--config", str(p))
    assert r.returncode == 2 and "--override REASON" in r.stderr
    mark = len(b.lines)
    why = "a steel beam 0.5 m deep under the ceiling; detector on its face, site engineer agreed"
    r = flash("--port", b.repl_path, "--config", str(p), "--json", "--override", why,
              "--installer", "Wang Wei (licence 44-0912)")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert [f["field"] for f in report["overridden"]] == ["install.detectors[0].mount_height_m"]
    assert "OVERRIDDEN by Wang Wei" in r.stderr
    on_board = json.loads((b.installed() / "override.json").read_text())
    assert on_board["by"] == "Wang Wei (licence 44-0912)" and on_board["reason"] == why
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)

    out = tmp_path / "record"
    from gasguard.tools.installer.identity import keygen

    ident = keygen(tmp_path / "id", "Wang Wei", "An Ran Co", "44-0912")[1]
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port", b.repl_path,
         "--config", str(p), "--out", str(out), "--yes", "--installer", str(ident),
         "--no-bump", "--no-pdf"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert r.returncode == 1 and "no bump test" in r.stdout, r.stdout + r.stderr
    rec = json.loads(next(out.glob("*.json")).read_text())
    ov = rec["install_rules_overridden"]
    assert ov["by"] == "Wang Wei (licence 44-0912)" and ov["reason"] == why and ov["current"]
    assert ov["overridden"][0]["field"] == "install.detectors[0].mount_height_m"
    # overridden, so not a failure of the record: the installer took it on, and it says so
    assert not any("install rule" in w for w in rec["verdict_reasons"])
    page = next(out.glob("*.html")).read_text()
    assert "install rules OVERRIDDEN by Wang Wei (licence 44-0912)" in page
    assert "install.detectors[0].mount_height_m" in page

    # the config fixed and flashed again: the override no longer applies and leaves the board
    mark = len(b.lines)
    r = flash("--port", b.repl_path, "--config", str(site_config(svc, tmp_path)), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["removed"] == ["override.json"]
    assert not (b.installed() / "override.json").exists()
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)


def test_flash_at_the_link_port_says_so_in_a_second_and_touches_nothing(tmp_path):
    """Issue 22: flash at the board's link UART dumped 2 kB of binary, waited 7 s and asked
    whether MicroPython was installed. It names the port in words, before compiling anything."""
    import time

    cfg, key = read_device_config(EXAMPLE)  # as installed: with its UART link to the gateway
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        time.sleep(1.5)  # no gateway on the link: the board sends a birth every second
        mark = len(svc.board.lines)
        t0 = time.monotonic()
        r = flash("--port", svc.link_endpoint, "--config", str(EXAMPLE), "--json")
        took = time.monotonic() - t0
        assert r.returncode == 2, r.stderr
        assert "the board's link UART, not its USB REPL" in r.stderr
        assert json.loads(r.stdout)["exit_code"] == 2  # --json: JSON alone, on failure too
        assert all(c.isprintable() or c in "\n" for c in r.stdout + r.stderr)
        assert "MicroPython installed" not in r.stderr and "image:" not in r.stderr
        assert took < 4.0, took  # the probe's second, plus Python starting the command
        # the board was left running as it was
        assert not any("Traceback" in x for x in svc.board.lines[mark:])


# --- issue 22's outside attack: the board is never left stopped, --json stays JSON ------------


def test_a_key_other_than_the_configs_is_refused(tmp_path):
    """M5: --key differing from key_hex was flashed without a word; the gateway's keys file then
    rejects every frame the board sends."""
    other = tmp_path / "other.hex"
    other.write_text("5a" * 32)
    r = flash("--port", "/dev/nonexistent", "--config", str(EXAMPLE), "--key", str(other))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not the key in the config's key_hex" in r.stderr and "Traceback" not in r.stderr
    same = tmp_path / "same.hex"
    same.write_text(json.loads(EXAMPLE.read_text())["key_hex"].upper() + "\n")
    r = flash("--port", "/dev/nonexistent", "--config", str(EXAMPLE), "--key", str(same))
    assert r.returncode == 3 and "no such port" in r.stderr  # accepted: on to the port


def test_an_override_needs_the_installers_name(tmp_path):
    """M6: --override without --installer put the OS login into the legal record."""
    p = _write(tmp_path, "beam.json", json.loads(EXAMPLE.read_text()))
    r = flash("--port", "/dev/nonexistent", "--config", str(p), "--override", "a beam", "--json")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--override needs --installer" in r.stderr
    assert json.loads(r.stdout)["exit_code"] == 2


@pytest.fixture
def looping_repl():
    """A port that shows MicroPython's banner and prompt to every byte but never a raw REPL: a
    board rebooting in a loop between flash's probe and mpremote (issue 22 attack H3)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    done = threading.Event()

    def answer() -> None:
        import select

        while not done.is_set():
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    os.read(master, 4096)
                    os.write(master, b"\x1b[2J\xff\xfeets Jun  8 2016 00:22:57\r\nrst:0x10 "
                             b"(RTCWDT_RTC_RESET)\r\nMicroPython v1.23.0\r\n>>> ")  # fmt: skip
                except OSError:
                    return

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    yield os.ttyname(slave)
    done.set()
    t.join(1)
    os.close(master)
    os.close(slave)


def test_a_board_that_will_not_stay_in_the_repl_is_named_and_json_stays_json(looping_repl):
    r = flash("--port", looping_repl, "--config", str(EXAMPLE), "--json")
    assert r.returncode == 3, r.stdout + r.stderr
    report = json.loads(r.stdout)  # the whole of stdout: none of mpremote's bytes before it
    assert report["exit_code"] == 3
    assert "answers but does not stay in the REPL" in r.stderr
    assert "restarting in a loop" in r.stderr and "MicroPython installed" not in r.stderr
    assert all(c.isprintable() or c in "\n" for c in r.stdout + r.stderr)


def _flash_here(monkeypatch, capsys, *args):
    """flash run in this process (its Board patched by the test): exit code, stdout, stderr."""
    from gasguard.tools.cli import main as cli_main

    code = cli_main(["flash", "--no-progress", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_step_the_board_refuses_leaves_it_running(factory_board, tmp_path, monkeypatch, capsys):
    """H1: every failure after the probe stopped the firmware restarts the board."""
    from gasguard.tools.installer import flash as fl

    b = factory_board.board

    def refuse(self, dirs):
        self.t.exec("raise OSError(5)")  # the board's own error, as a failing flash chip's

    monkeypatch.setattr(fl.Board, "makedirs", refuse)
    mark = len(b.lines)
    code, out, err = _flash_here(monkeypatch, capsys, "--port", b.repl_path, "--config",
                                 str(site_config(factory_board, tmp_path)))  # fmt: skip
    assert code == 1, out + err
    assert "the board refused a step (the board's flash memory failed" in err
    assert "the old firmware is still in place" in err and "Traceback" not in err
    assert "the board was restarted" in err
    b.wait_line("GASGUARD RUNNING unprovisioned", 20, start=mark)
    time.sleep(0.5)
    assert not b.maintenance


def test_a_full_filesystem_removes_what_was_staged_and_says_so(
    factory_board, tmp_path, monkeypatch, capsys
):
    """H4: ENOSPC (OSError 28) half-way through the copy left the half-staged install filling
    the filesystem and advised a retry that could not work."""
    import errno as errnos

    from gasguard.tools.installer import flash as fl

    b = factory_board.board
    write = fl.Board.write

    def full(self, path, data, progress):
        if path.endswith("key.hex"):  # half a file fits, then the board's filesystem is full
            self.t.exec("f=open(%r,'wb')\nf.write(b'00')" % path)
            raise OSError(errnos.ENOSPC, path)  # what mpremote makes of the board's OSError 28
        return write(self, path, data, progress)

    monkeypatch.setattr(fl.Board, "write", full)
    mark = len(b.lines)
    code, out, err = _flash_here(monkeypatch, capsys, "--port", b.repl_path, "--config",
                                 str(site_config(factory_board, tmp_path)), "--json")  # fmt: skip
    assert code == 1, out + err
    assert json.loads(out)["exit_code"] == 1
    assert "the board's filesystem is full" in err and "what flash had staged is removed" in err
    assert "Errno" not in err and "same command again" not in err
    assert not (factory_board.flash / "gg" / "a").exists()
    b.wait_line("GASGUARD RUNNING unprovisioned", 20, start=mark)


def test_flash_repairs_a_layout_in_the_way(factory_board, tmp_path):
    """H4: a file where gg or gg/a must be a directory, a directory where gg/current must be a
    file: flash failed with EISDIR/ENOTDIR forever and advised running it again."""
    svc = factory_board
    b = svc.board
    site = site_config(svc, tmp_path)
    (svc.flash / "gg").write_text("junk")
    mark = len(b.lines)
    r = flash("--port", b.repl_path, "--config", str(site), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["repaired"] == ["gg"]
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)

    shutil.rmtree(svc.flash / "gg")
    (svc.flash / "gg").mkdir()
    (svc.flash / "gg" / "a").write_text("junk")
    (svc.flash / "gg" / "current").mkdir()  # booted as no pointer: the bench's root install
    mark = len(b.lines)
    r = flash("--port", b.repl_path, "--config", str(site), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(json.loads(r.stdout)["repaired"]) == ["gg/a", "gg/current"]
    assert (svc.flash / "gg" / "current").read_text().split() == ["a", "."]
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)


def test_a_pointer_naming_no_install_is_not_kept_as_the_fallback(factory_board, tmp_path):
    """L5: flash wrote gg/current's garbage back as the fallback ("a zz-not-there")."""
    svc = factory_board
    (svc.flash / "gg").mkdir()
    (svc.flash / "gg" / "current").write_bytes(b"zz-not-there \xff")
    r = flash("--port", svc.board.repl_path, "--config", str(site_config(svc, tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (svc.flash / "gg" / "current").read_text().split() == ["a", "."]


def test_ctrl_c_restarts_the_board_and_exits_130(factory_board, tmp_path):
    """M1: Ctrl-C gave a traceback and left the firmware stopped."""
    import signal

    b = factory_board.board
    mark = len(b.lines)
    p = subprocess.Popen(
        [sys.executable, "-m", "gasguard.tools.cli", "flash", "--no-progress", "--port",
         b.repl_path, "--config", str(site_config(factory_board, tmp_path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    for line in p.stdout:  # the board is stopped and flash is working on it
        if line.startswith("board:"):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err and "restarted" in err
    b.wait_line("GASGUARD RUNNING", 20, start=mark + 1)
    time.sleep(0.5)
    assert not b.maintenance


def test_detectors_that_do_not_answer_fail_the_flash_by_name(factory_board, tmp_path):
    """M4: detectors at Modbus addresses nothing answers flashed with exit 0 and "running"; the
    board logged detector.fault within seconds. The new install stays (it is the wiring)."""
    svc = factory_board
    cfg = json.loads(site_config(svc, tmp_path).read_text())
    for block in (cfg["detectors"], cfg["install"]["detectors"]):
        block[0]["address"], block[1]["address"] = 7, 8
    p = _write(tmp_path, "noanswer.json", cfg)
    r = flash("--port", svc.board.repl_path, "--config", str(p))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 detectors report a fault" in r.stderr
    assert "detector 1 (Modbus address 7)" in r.stderr
    assert "detector 2 (Modbus address 8)" in r.stderr
    assert "new install stays" in r.stderr
    assert "None" not in r.stdout + r.stderr and "det=" not in r.stdout + r.stderr
    assert json.loads((svc.board.installed() / "config.json").read_text())[
        "detectors"][0]["address"] == 7  # fmt: skip
