"""`gasguard commission` on a virtual board: the on-device self-test drives every output in turn,
polls each detector, opens and closes the valve against its position input, writes the record and
restarts the board; a silent detector fails the record and the valve is then never opened."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gasguard.tools.device import read_device_config
from gasguard.tools.sim.vboard_service import VboardService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"
OUTPUTS = ["red", "yellow", "green", "buzzer", "fan"]


@pytest.fixture
def board(tmp_path_factory):
    """A board running kitchen-main without its gateway link; svc.config_path: that config, as
    an installer's file (install block and key), for --config."""
    cfg, key = read_device_config(EXAMPLE)
    cfg["link"] = {"kind": "none"}
    path = tmp_path_factory.mktemp("site") / "kitchen-main.json"
    path.write_text(json.dumps(cfg, indent=2))
    with VboardService(cfg, key) as svc:
        svc.config_path = path
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        yield svc


def commission(
    svc: VboardService, out: Path, *extra: str, yes: bool = True, config: Path | None = None,
    installer: str = "Wang Wei",
) -> subprocess.CompletedProcess:
    config = config or getattr(svc, "config_path", EXAMPLE)
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port", svc.board.repl_path]
        + ["--config", str(config), "--out", str(out), "--installer", installer]
        + (["--yes"] if yes else [])
        + list(extra),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        stdin=subprocess.DEVNULL,  # no terminal: nobody can be asked
    )


def test_self_test_passes_and_writes_the_record(board, tmp_path):
    b = board.board
    mark = len(b.history)
    lines = len(b.lines)
    r = commission(board, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # every lamp, the buzzer and the fan were switched on and off again, one after another
    seen = [(pin, v) for _, pin, v in b.history[mark:] if pin in OUTPUTS and v == 1]
    assert [p for p, _ in seen][-5:] == OUTPUTS
    # the valve was opened once and closed again, the position input following it
    valve = [v for _, pin, v in b.history[mark:] if pin == "valve"]
    assert valve[-2:] == [1, 0]
    rec = json.loads(next(tmp_path.glob("commissioning-hotpot-88-main-*.json")).read_text())
    checks = {c["check"]: c for c in rec["checks"]}
    assert rec["site"] == "sh-xuhui-0042" and rec["installer"] == "Wang Wei"
    assert checks["detector.1"]["result"] == "pass" and checks["detector.2"]["result"] == "pass"
    assert checks["valve"]["result"] == "pass" and checks["valve"]["open_ms"] > 0
    # --yes: nobody was asked, so the lamps, buzzer and fan are not confirmed, never passed
    assert all(
        checks[o]["result"] == "not confirmed" and checks[o]["confirmed"] is None for o in OUTPUTS
    )
    assert rec["verdict"].startswith("NOT CONFIRMED") and "red" in rec["verdict"]
    assert rec["install_rules_overridden"] is None
    assert len(rec["install"]["detectors"]) == 2
    md = next(tmp_path.glob("commissioning-hotpot-88-main-*.md")).read_text()
    assert "| valve | pass |" in md and "ceiling above the wok line" in md
    # a detector is named as the regulator's console and the demo name it (issue 22)
    assert "| detector 2 (Modbus address 2) | pass |" in md
    assert "| detector 1 (Modbus address 1) | ceiling above the wok line" in md
    assert re.search(r"detector 1 \(Modbus address 1\) +PASS", r.stdout), r.stdout
    # back in service: restarted, valve closed until a person resets it
    assert "cause soft" in b.wait_line("GASGUARD RUNNING", 20, start=lines)
    b.wait_output("valve", 0, 5)


def test_silent_detector_fails_and_the_valve_stays_shut(board, tmp_path):
    b = board.board
    board.apply({"det": 2, "silent": True})  # unplugged at the junction box
    mark = len(b.history)
    r = commission(board, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "verdict: FAIL" in r.stdout
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    checks = {c["check"]: c for c in rec["checks"]}
    assert checks["detector.2"]["result"] == "fail"
    assert "no answer at address 2" in checks["detector.2"]["detail"]
    assert checks["detector.1"]["result"] == "pass"
    assert checks["valve"]["result"] == "skipped"
    assert [v for _, pin, v in b.history[mark:] if pin == "valve" and v == 1] == []


def test_a_detector_missing_after_a_reboot_never_halts_the_board(tmp_path):
    """Issue 19 item 10: with the gateway link configured (less heap) and a detector unplugged
    just after a reboot, the self-test ran out of heap 2 times in 3 and left the board halted at
    the REPL. Three tries in a row: each ends with a record naming the silent detector and the
    board running again, valve closed."""
    cfg, key = read_device_config(EXAMPLE)  # as installed: with its UART link to the gateway
    with VboardService(cfg, key) as svc:
        b = svc.board
        mark = 0
        details = []
        for attempt in range(3):
            b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)
            svc.apply({"det": 2, "silent": True})  # unplugged at the junction box
            time.sleep(0.3)
            mark = len(b.lines)
            r = commission(svc, tmp_path / str(attempt))
            out = r.stdout + r.stderr
            assert "MemoryError" not in out, out
            assert r.returncode == 1 and "verdict: FAIL" in r.stdout, out
            rec = json.loads(next((tmp_path / str(attempt)).glob("*.json")).read_text())
            checks = {c["check"]: c for c in rec["checks"]}
            details.append(checks["detector.2"]["detail"])
            assert checks["valve"]["result"] == "skipped"
            # left running and safe: restarted into the safety loop, valve closed
            b.wait_line("GASGUARD RUNNING", 20, start=mark)
            b.wait_output("valve", 0, 5)
            svc.apply({"det": 2, "silent": False})
    assert all("no answer at address 2" in d for d in details), details


def test_without_a_terminal_nothing_nobody_saw_is_passed(board, tmp_path):
    """Issue 19 item 10: no terminal and no --yes: lamps, buzzer and fan were driven but nobody
    was asked, so they are "not confirmed" and the verdict is not a PASS."""
    r = commission(board, tmp_path, yes=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PASS" not in r.stdout.split("verdict:")[1].splitlines()[0]
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert rec["verdict"].startswith("NOT CONFIRMED")
    checks = {c["check"]: c for c in rec["checks"]}
    for o in OUTPUTS:
        assert checks[o]["result"] == "not confirmed" and checks[o]["confirmed"] is None
    assert checks["detector.1"]["result"] == "pass" and checks["valve"]["result"] == "pass"
    md = next(tmp_path.glob("*.md")).read_text()
    assert "NOT CONFIRMED" in md and "| red | not confirmed |" in md


def test_the_self_test_loads_without_new_interned_names():
    """The stopped firmware's heap is fragmented: a new interned name can need the names' pool
    to double (7 KB at once), which is how the self-test ran out of heap (issue 19 item 10).
    Loading it after a stop interns its module and file names and nothing else."""
    from gasguard.tools.installer.flash import Board

    cfg, key = read_device_config(EXAMPLE)  # with the link: the most names a board interns
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        board = Board(svc.board.repl_path)
        try:
            out = board.t.exec(
                "import micropython\nmicropython.qstr_info()\nfrom gasguard import selftest\n"
                "micropython.qstr_info()\n"
            ).decode()
        finally:
            board.restart("linux")
    before, after = (int(n) for n in re.findall(r"n_qstr=(\d+)", out))
    pools = [int(n) for n in re.findall(r"n_pool=(\d+)", out)]
    assert after - before <= 2, out
    # the names' pools hold 20, 40, 80 ... names (each twice the last): the self-test must fit
    # the pool the firmware already has, with room to spare for the next firmware change
    room = 20 * (2 ** pools[0] - 1) - after
    assert pools[0] == pools[1] and room >= 16, "too near the names' pool step: %s" % out


def test_each_run_writes_its_own_record(board, tmp_path):
    """Issue 22: a second run in the same minute overwrote the first record."""
    for _ in range(2):
        r = commission(board, tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        board.board.wait_line("GASGUARD RUNNING", 20, start=len(board.board.lines) - 1)
    records = sorted(tmp_path.glob("commissioning-hotpot-88-main-*.json"))
    assert len(records) == 2 and len(list(tmp_path.glob("*.md"))) == 2, records
    # each one says so on the terminal, under its own name
    assert all(json.loads(p.read_text())["verdict"].startswith("NOT CONFIRMED") for p in records)


def test_records_made_in_the_same_second_keep_their_own_names(tmp_path):
    from datetime import datetime

    from gasguard.tools.installer.commission import write_record

    when = datetime(2026, 11, 30, 14, 5, 9).astimezone()
    rec = {"device": "hotpot-88-main", "site": "s", "date": when.isoformat(), "checks": []}
    rec.update(dict.fromkeys(("firmware", "micropython", "platform", "config_digest"), "x"))
    rec.update(installer="Wang Wei", verdict="PASS")
    paths = [write_record(tmp_path, dict(rec, n=n), when)[1] for n in range(3)]
    assert len(set(paths)) == 3
    assert [json.loads(p.read_text())["n"] for p in paths] == [0, 1, 2]
    assert paths[0].name == "commissioning-hotpot-88-main-20261130-140509.json"


@pytest.mark.parametrize("left_out", ["--installer", "--config"])
def test_a_record_without_installer_or_config_is_refused(tmp_path, left_out):
    """Issue 22: a missing --installer or --config went unremarked. Refused before the board is
    touched (the port here does not even exist), exit 2, naming what to add."""
    argv = ["commission", "--port", str(tmp_path / "ttyUSB9"), "--out", str(tmp_path), "--yes"]
    argv += ["--config", str(EXAMPLE), "--installer", "Wang Wei"]
    i = argv.index(left_out)
    del argv[i : i + 2]
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the record needs %s" % left_out in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_link_port_is_named_in_a_second_without_binary(tmp_path):
    """Issue 22: commission at the board's link UART dumped 2 kB of binary, waited 7 s and sent
    the installer off to reinstall MicroPython. It says what the port is, in words."""
    cfg, key = read_device_config(EXAMPLE)  # as installed: with its UART link to the gateway
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        time.sleep(1.5)  # no gateway on the link: the board sends a birth every second
        mark = len(svc.board.lines)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gasguard.tools.cli", "commission"]
            + ["--port", svc.link_endpoint, "--config", str(EXAMPLE), "--installer", "Wang Wei"]
            + ["--out", str(tmp_path), "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        err = proc.stderr.readline()  # the first line the installer sees
        seen_after = time.monotonic() - t0
        out, rest = proc.communicate(timeout=30)
        text = (out + err + rest).decode("utf-8")  # no binary: it decodes, and prints
        assert proc.returncode == 2, text
        assert "the board's link UART, not its USB REPL" in err.decode()
        assert all(c.isprintable() or c in "\n" for c in text), text
        assert "MicroPython installed" not in text and list(tmp_path.iterdir()) == []
        # within a second of the probe starting (the rest is Python importing the command)
        assert seen_after < 3.0, seen_after
        # the board was left alone: still running, nothing on its console about it
        assert not any("Traceback" in x for x in svc.board.lines[mark:])


def test_a_board_that_goes_away_mid_test_is_exit_3_in_words(board, tmp_path):
    """The USB cable pulled during the self-test: no traceback and no record, exit 3 (device
    unreachable), and what to do."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port", board.board.repl_path]
        + ["--config", str(board.config_path), "--out", str(tmp_path), "--installer", "Wang Wei"]
        + ["--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert "self-test on" in proc.stdout.readline()
    board.board.stop()  # the REPL pty goes: what a pulled USB cable does to /dev/ttyUSB0
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert "the board went away during the self-test" in err and "run the same command" in err
    # the restart could not reach it either (issue 22 attack H1): say what to do about that
    assert "firmware may be stopped" in err and "reset or power-cycle the board" in err
    assert "Traceback" not in out + err and list(tmp_path.iterdir()) == []


# --- the issue 22 attack: H2, L3, L4 -----------------------------------------------------------

BACK = ROOT / "examples" / "hotpot-88" / "kitchen-back.json"


def untouched(b, mark: int) -> None:
    """No self-test step ran: the buzzer, fan and valve were never switched on since mark (the
    lamps light for the stop and the restart: the valve stays closed until a reset on site)."""
    driven = ("buzzer", "fan", "valve")
    on = [(pin, v) for _, pin, v in b.history[mark:] if pin in driven and v == 1]
    assert on == [], on


def test_another_devices_config_is_refused_before_the_self_test(board, tmp_path):
    """H2: on a board running hotpot-88-main, --config kitchen-back.json wrote a record saying
    hotpot-88-main with kitchen-back's detector locations, exit 0. Refused, exit 2, before any
    self-test step, and the board restarted."""
    b = board.board
    mark, lines = len(b.history), len(b.lines)
    r = commission(board, tmp_path / "rec", config=BACK, installer="Eve 1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "hotpot-88-back" in r.stderr and "hotpot-88-main" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "self-test on" not in r.stdout
    assert not (tmp_path / "rec").exists() or list((tmp_path / "rec").iterdir()) == []
    untouched(b, mark)
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=lines)  # running again


def test_a_config_that_differs_from_the_boards_is_refused(board, tmp_path):
    """H2: the same device id, but not the config the board runs (changed since the flash):
    the record would describe a config the board does not run. Refused, exit 2."""
    cfg = json.loads(board.config_path.read_text())
    cfg["alarm"]["low_alarm_pct"] = 15
    changed = tmp_path / "kitchen-main.json"
    changed.write_text(json.dumps(cfg))
    mark = len(board.board.history)
    r = commission(board, tmp_path / "rec", config=changed)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "config digest" in r.stderr and "flash" in r.stderr, r.stderr
    untouched(board.board, mark)


def test_the_config_as_flash_writes_it_is_the_boards(tmp_path):
    """What `gasguard flash` puts on the board (the config without its install block and key)
    is the config the installer's file gives: accepted, and its digest is the record's."""
    from gasguard.tools.installer.commission import config_digests

    cfg, key = read_device_config(EXAMPLE)
    cfg["link"] = {"kind": "none"}
    path = tmp_path / "kitchen-main.json"
    path.write_text(json.dumps(cfg))
    on_board = {k: v for k, v in cfg.items() if k not in ("install", "key_hex")}
    with VboardService(on_board, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        r = commission(svc, tmp_path / "rec", config=path)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads(next((tmp_path / "rec").glob("*.json")).read_text())
    assert rec["config_digest"] == config_digests(path.read_bytes(), cfg)[0]
    assert len(rec["install"]["detectors"]) == 2  # the install block, from the file


def test_a_board_flashed_with_the_config_is_commissioned_with_it(tmp_path):
    """H2 end to end: `gasguard flash --config F` then `gasguard commission --config F` is the
    installer's everyday path; the board's config digest is the one commission expects for F
    (flash writes F without its install block and key: tools/installer/flash.py build_image)."""
    cfg, _ = read_device_config(EXAMPLE)
    cfg["device_id"] = "unprovisioned"  # a board as it leaves the bench
    cfg["link"] = {"kind": "none"}
    site = json.loads(EXAMPLE.read_text())
    site["link"] = {"kind": "none"}
    path = tmp_path / "kitchen-main.json"
    path.write_text(json.dumps(site))
    with VboardService(cfg, bytes(range(32))) as svc:
        svc.board.wait_line("GASGUARD RUNNING unprovisioned", 20)
        r = commission(svc, tmp_path / "before", config=path)  # not flashed yet: refused
        assert r.returncode == 2 and "this board is unprovisioned" in r.stderr, r.stderr
        mark = len(svc.board.lines)
        f = subprocess.run(
            [sys.executable, "-m", "gasguard.tools.cli", "flash", "--no-progress", "--port"]
            + [svc.board.repl_path, "--config", str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert f.returncode == 0, f.stdout + f.stderr
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)
        r = commission(svc, tmp_path / "rec", config=path)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads(next((tmp_path / "rec").glob("*.json")).read_text())
    assert rec["device"] == "hotpot-88-main" and len(rec["install"]["detectors"]) == 2


@pytest.mark.parametrize("where", ["file", "under a file", "proc"])
def test_an_out_that_cannot_take_the_record_is_refused_first(tmp_path, where):
    """L3: --out at an existing file ran the whole self-test (the valve cycled), then a
    FileExistsError traceback and no record. Refused before the board is touched (the port
    here does not even exist), exit 2."""
    out = {"file": tmp_path / "rec3", "under a file": tmp_path / "rec3" / "sub",
           "proc": Path("/proc/gasguard-records")}[where]  # fmt: skip
    (tmp_path / "rec3").write_text("an earlier record\n")
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port"]
        + [str(tmp_path / "ttyUSB9"), "--config", str(EXAMPLE), "--installer", "Wang Wei"]
        + ["--out", str(out), "--yes"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--out" in r.stderr and str(out) in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "rec3").read_text() == "an earlier record\n"


@pytest.mark.parametrize("name", ["Eve\n## Verdict: PASS", "Eve\r1", "Eve\x1b[2J", "Eve\t1"])
def test_an_installer_name_with_control_characters_is_refused(tmp_path, name):
    """L4: --installer took newlines: a "## Verdict: PASS" heading could be injected into the
    record. Refused before the board is touched, exit 2."""
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port"]
        + [str(tmp_path / "ttyUSB9"), "--config", str(EXAMPLE), "--installer", name]
        + ["--out", str(tmp_path / "rec"), "--yes"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--installer" in r.stderr and "control character" in r.stderr, r.stderr
    assert not (tmp_path / "rec").exists()


def test_markdown_in_the_record_is_escaped():
    """L4: '|' split the record's table, '#' and the like are Markdown: each is shown as
    written, never as Markdown, wherever it comes from (installer, config, override)."""
    from datetime import datetime

    from gasguard.tools.installer.commission import markdown, record

    results = [
        {"check": "about", "result": "info", "device": "d-1", "site": "s", "fw": "1",
         "cfg": "ab"},
        {"check": "red", "result": "pass", "detail": "x | y"},
    ]  # fmt: skip
    install = {"ceiling_m": 3, "valve_installed": "2026-09-15", "detectors": [
        {"address": 1, "name": "detector 1", "location": "wok | ## Verdict: PASS *bold*",
         "mount_height_m": 2.9, "distance_m": 1, "installed": "2026-09-15"}]}  # fmt: skip
    override = {"by": "Eve | x", "date": "d", "reason": "# beam", "overridden": [
        {"field": "f|g", "rule": "r", "message": "m"}]}  # fmt: skip
    rec = record(results, {}, "Eve | Licence #1 *x*", install, datetime.now().astimezone(),
                 override)  # fmt: skip
    md = markdown(rec)
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    # every table row has the columns of its table: no cell was split by a '|'
    assert all(ln.count("|") - ln.count("\\|") in (3, 4, 5, 6) for ln in rows), md
    assert "Eve \\| Licence \\#1 \\*x\\*" in md
    assert "wok \\| \\#\\# Verdict: PASS \\*bold\\*" in md
    assert "\n## Verdict" not in md and "| # beam" not in md


def test_a_config_without_an_install_block_is_said_loudly(tmp_path):
    """L4: no install block gave a record without install data, exit 0, no warning. The record
    and the terminal say "no install record: placement not checked", and it is exit 1."""
    cfg, key = read_device_config(EXAMPLE)
    cfg["link"] = {"kind": "none"}
    del cfg["install"]
    path = tmp_path / "kitchen-main.json"
    path.write_text(json.dumps(cfg))
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        r = commission(svc, tmp_path / "rec", config=path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no install record: placement not checked" in r.stderr
    md = next((tmp_path / "rec").glob("*.md")).read_text()
    assert "no install record: placement not checked" in md.lower()
    rec = json.loads(next((tmp_path / "rec").glob("*.json")).read_text())
    assert "no install record: placement not checked" in rec["warnings"]
