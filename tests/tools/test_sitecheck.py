"""`gasguard config check` on a whole site (issue 22): device configs, the gateway config and its
keys checked together. Each cross-file rule passes on the example site and fails, naming the
files and fields, on a copy that breaks it; unreadable input is exit 2, findings exit 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parents[2] / "examples" / "hotpot-88"
TODAY = "2026-11-23"
MAIN_KEY = "9f1c2e3d4a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344aa"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "config", "check", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # a FIFO or a device read to its end would hang here
    )


def check_site(site: Path, *extra: str) -> subprocess.CompletedProcess:
    r = run(site, "--today", TODAY, *extra)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def findings(site: Path) -> tuple[int, list[dict]]:
    r = check_site(site, "--json")
    return r.returncode, json.loads(r.stdout)["findings"]


def named(found: list[dict], rule: str) -> list[dict]:
    return [f for f in found if rule in f["rule"]]


def places(f: dict) -> set[tuple[str, str]]:
    return {(Path(w["file"]).name, w["field"]) for w in f["where"]}


@pytest.fixture
def site(tmp_path) -> Path:
    dst = tmp_path / "hotpot-88"
    shutil.copytree(SITE, dst)
    return dst


def edit_json(path: Path, fn) -> None:
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


# --- the example site --------------------------------------------------------------------------


def test_the_example_site_is_fit_to_install():
    r = check_site(SITE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 error(s), 0 warning(s) - fit to install" in r.stdout
    assert "2 device configs" in r.stdout


def test_several_files_are_one_site():
    files = [SITE / n for n in ("kitchen-main.json", "kitchen-back.json", "gateway.toml")]
    r = run(*files, "--today", TODAY, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    kinds = {Path(f["file"]).name: f["kind"] for f in report["files"]}
    # the gateway's keys come with it, as the gateway itself reads them
    assert kinds == {
        "kitchen-main.json": "device", "kitchen-back.json": "device", "gateway.toml": "gateway",
        "keys.toml": "keys",
    }  # fmt: skip
    assert report["errors"] == 0 and report["findings"] == []


# --- each cross-file rule ----------------------------------------------------------------------


def test_a_device_without_a_key_is_an_error(site):
    (site / "keys.toml").write_text('[keys]\n"hotpot-88-main" = "%s"\n' % MAIN_KEY)
    code, found = findings(site)
    assert code == 1
    (f,) = named(found, "device keys")
    assert places(f) == {("kitchen-back.json", "device_id"), ("keys.toml", "keys")}
    assert "hotpot-88-back" in f["message"] and "no key" in f["message"]


def test_a_key_that_differs_from_the_gateways_is_an_error_and_never_printed(site):
    other = "00" * 31 + "01"
    edit_json(site / "kitchen-main.json", lambda c: c.update(key_hex=other))
    r = check_site(site)
    assert r.returncode == 1
    line = next(x for x in r.stdout.splitlines() if "device keys" in x)
    assert "kitchen-main.json: key_hex" in line and "keys.toml: keys.hotpot-88-main" in line
    assert other not in r.stdout and MAIN_KEY not in r.stdout


def test_a_duplicate_device_id_is_an_error(site):
    edit_json(site / "kitchen-back.json", lambda c: c.update(device_id="hotpot-88-main"))
    code, found = findings(site)
    assert code == 1
    (f,) = named(found, "unique device ids")
    assert places(f) == {("kitchen-main.json", "device_id"), ("kitchen-back.json", "device_id")}


@pytest.mark.parametrize("beat, ok", [(14, True), (15, False), (40, False)])
def test_a_heartbeat_the_offline_threshold_cannot_tolerate_is_an_error(site, beat, ok):
    """The gateway declares a board offline after 10 s x 3 = 30 s of silence; one lost heartbeat
    leaves two of the board's periods of silence, which must stay under it."""
    edit_json(site / "kitchen-back.json", lambda c: c.update(heartbeat_s=beat))
    code, found = findings(site)
    hits = named(found, "heartbeat vs offline threshold")
    if ok:
        assert code == 0 and hits == [], found
        return
    assert code == 1
    (f,) = hits
    assert places(f) == {
        ("kitchen-back.json", "heartbeat_s"), ("gateway.toml", "gateway.heartbeat_s"),
        ("gateway.toml", "gateway.missed_heartbeats"),
    }  # fmt: skip
    assert "30 s" in f["message"] and "%d s" % beat in f["message"]


def test_a_gateway_that_gives_up_after_one_heartbeat_fails_every_board(site):
    gw = site / "gateway.toml"
    gw.write_text(gw.read_text().replace("missed_heartbeats = 3", "missed_heartbeats = 1"))
    code, found = findings(site)
    assert code == 1
    hits = named(found, "heartbeat vs offline threshold")
    assert {Path(f["file"]).name for f in hits} == {"kitchen-main.json", "kitchen-back.json"}


def test_colliding_pins_name_the_file_and_field(site):
    edit_json(site / "kitchen-main.json", lambda c: c["pins"].update(fan=27))  # the buzzer's
    code, found = findings(site)
    assert code == 1
    f = next(f for f in found if f["field"] == "pins.fan")
    assert Path(f["file"]).name == "kitchen-main.json" and "GPIO 27" in f["message"]


def test_a_serial_board_at_a_baud_the_gateway_does_not_use_is_an_error(site):
    edit_json(site / "kitchen-back.json", lambda c: c["link"].update(baud=57600))
    code, found = findings(site)
    assert code == 1
    (f,) = named(found, "link settings")
    assert places(f) == {("kitchen-back.json", "link.baud"), ("gateway.toml", "links.serial")}


def test_a_wifi_board_needs_the_gateways_tcp_listener(site):
    def wifi(c):
        c["link"] = {"kind": "tcp", "host": "192.168.1.2", "ssid": "kitchen", "password": "x"}

    edit_json(site / "kitchen-back.json", wifi)
    code, found = findings(site)
    assert code == 1
    (f,) = named(found, "link settings")
    assert places(f) == {("kitchen-back.json", "link.kind"), ("gateway.toml", "links.tcp")}


def test_a_key_with_no_device_config_is_a_warning(site):
    (site / "kitchen-back.json").unlink()
    code, found = findings(site)
    assert code == 0
    (f,) = found
    assert f["level"] == "warning" and places(f) == {("keys.toml", "keys.hotpot-88-back")}


def test_a_gateway_config_the_gateway_refuses_is_a_finding(site):
    gw = site / "gateway.toml"
    gw.write_text(gw.read_text().replace("heartbeat_s = 10", "heartbeat_s = 0"))
    code, found = findings(site)
    assert code == 1
    f = next(f for f in found if f["field"] == "gateway.heartbeat_s")
    assert Path(f["file"]).name == "gateway.toml" and "gateway refuses" in f["rule"]


def test_a_gateway_naming_a_missing_keys_file_is_a_finding(site):
    (site / "keys.toml").unlink()
    code, found = findings(site)
    assert code == 1
    (f,) = [f for f in found if f["level"] == "error"]
    assert places(f) == {("gateway.toml", "gateway.keys")} and "cannot read" in f["message"]


def test_a_key_the_gateway_refuses_is_one_finding_on_the_keys_file(site):
    (site / "keys.toml").write_text('[keys]\n"hotpot-88-main" = "abcd"\n')
    code, found = findings(site)
    assert code == 1
    (f,) = [f for f in found if f["level"] == "error"]
    assert places(f) == {("keys.toml", "keys.hotpot-88-main")} and "16..64 bytes" in f["message"]
    assert "abcd" not in f["message"]


def test_device_findings_carry_their_file(site):
    edit_json(site / "kitchen-back.json", lambda c: c["install"].update(valve_installed="x"))
    r = check_site(site)
    assert r.returncode == 1
    assert "kitchen-back.json: install.valve_installed:" in r.stdout


# --- input that is no site: exit 2 -------------------------------------------------------------


def test_an_unreadable_file_in_a_site_is_exit_2(site):
    (site / "kitchen-new.json").write_text("{ not json")
    r = check_site(site)
    assert r.returncode == 2 and "kitchen-new.json" in r.stderr and "not valid JSON" in r.stderr


def test_a_keys_file_that_is_not_toml_is_exit_2(site):
    (site / "keys.toml").write_text("[keys\n")
    r = check_site(site)
    assert r.returncode == 2 and "keys.toml" in r.stderr and "TOML" in r.stderr


def test_a_missing_file_is_exit_2():
    r = run(SITE / "kitchen-main.json", SITE / "nowhere.json", "--today", TODAY)
    assert r.returncode == 2 and "nowhere.json" in r.stderr and "Traceback" not in r.stderr


def test_a_directory_with_no_configs_is_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    r = check_site(tmp_path)
    assert r.returncode == 2 and "no device configs" in r.stderr


def test_commissioning_records_in_a_site_are_not_configs(site):
    (site / "commissioning-hotpot-88-main-20261123-1000.json").write_text('{"record": "x"}')
    assert check_site(site).returncode == 0


@pytest.mark.parametrize("today", ["30/11/2026", "2026-11-31", "today"])
def test_a_bad_today_on_a_site_is_exit_2_with_the_form_to_use(today):
    r = run(SITE, "--today", today)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "YYYY-MM-DD" in r.stderr and "--today" in r.stderr


# --- hostile files (issue 22 attack, M2, M3, L6): bounded, regular files only, exit 2 in words --


def test_fifos_devices_and_symlink_loops_in_a_site_are_left_out_and_named(site):
    os.mkfifo(site / "kitchen-fifo.json")  # opened, it would wait for a writer for ever
    (site / "zero.toml").symlink_to("/dev/zero")  # read, it would never end
    (site / "l1.json").symlink_to("l2.json")  # each other's link: a loop
    (site / "l2.json").symlink_to("l1.json")
    r = check_site(site)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kitchen-fifo.json: a FIFO (named pipe), not a regular file" in r.stdout
    assert "zero.toml: a character device, not a regular file" in r.stdout
    assert "l1.json: a symlink loop" in r.stdout and "l2.json: a symlink loop" in r.stdout
    report = json.loads(check_site(site, "--json").stdout)
    why = {Path(x["file"]).name: x["why"] for x in report["left_out"]}
    assert set(why) == {"kitchen-fifo.json", "zero.toml", "l1.json", "l2.json"}
    assert {Path(f).name for f in report["skipped"]} >= set(why)


@pytest.mark.parametrize("kind", ["fifo", "zero", "loop"])
def test_a_named_file_that_is_not_a_regular_file_is_exit_2(tmp_path, kind):
    p = tmp_path / "x.toml"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "zero":
        p.symlink_to("/dev/zero")
    else:
        p.symlink_to(tmp_path / "y.toml")
        (tmp_path / "y.toml").symlink_to(p)
    for extra in ([], ["--json"]):
        r = run(p, SITE / "kitchen-main.json", "--today", TODAY, *extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        words = {"fifo": "a FIFO", "zero": "a character device", "loop": "symlink loop"}[kind]
        assert "x.toml" in r.stderr and words in r.stderr, r.stderr
        if extra:
            assert words in json.loads(r.stdout)["error"]


def test_a_toml_nesting_bomb_is_exit_2_with_json(tmp_path):
    bomb = tmp_path / "bomb.toml"
    bomb.write_text("a = " + "[" * 50000 + "]" * 50000)
    r = run(bomb, SITE / "kitchen-main.json", "--today", TODAY, "--json")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "nested too deep" in json.loads(r.stdout)["error"]


def test_a_toml_file_is_size_checked_before_it_is_read(site):
    (site / "keys.toml").write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\n")
    r = check_site(site)
    assert r.returncode == 2 and "keys.toml" in r.stderr and "at most" in r.stderr, r.stderr


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_keys_path_to_a_device_or_fifo_is_a_finding_not_a_hang(site, target):
    if target == "fifo":
        os.mkfifo(site / "keys.fifo")
        target = "keys.fifo"
    else:
        target = "../" * 12 + "dev/zero"
    (site / "keys.toml").unlink()
    gw = site / "gateway.toml"
    gw.write_text(gw.read_text().replace('keys = "keys.toml"', 'keys = "%s"' % target))
    code, found = findings(site)
    assert code == 1
    (f,) = [f for f in found if f["level"] == "error"]
    assert places(f) == {("gateway.toml", "gateway.keys")}
    assert "not a regular file" in f["message"] and "cannot read its keys" in f["message"]


def test_the_keys_file_is_the_one_the_gateway_names_whatever_its_name(site):
    """M3: keys = "keys.txt" was read as a device config ("configs are JSON")."""
    (site / "keys.toml").rename(site / "keys.txt")
    gw = site / "gateway.toml"
    gw.write_text(gw.read_text().replace('keys = "keys.toml"', 'keys = "keys.txt"'))
    for args in ([site], [site / "kitchen-main.json", gw, site / "keys.txt"]):
        r = run(*args, "--today", TODAY, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout)
        kinds = {Path(f["file"]).name: f["kind"] for f in report["files"]}
        assert kinds["keys.txt"] == "keys" and report["not_checked"] == [], report
        assert "keys.txt" not in {Path(f).name for f in report["skipped"]}
    # and it is really read: a key that differs is found in it
    (site / "keys.txt").write_text('[keys]\n"hotpot-88-main" = "%s"\n' % ("00" * 32))
    code, found = findings(site)
    assert code == 1
    assert any(("keys.txt", "keys.hotpot-88-main") in places(f) for f in found), found


@pytest.mark.parametrize("name", ["gateway.toml", "keys.toml"])
def test_a_gateway_config_or_keys_file_alone_is_no_site(name):
    """L6: it said "0 device configs ... fit to install" (exit 0); a directory without device
    configs is exit 2, and so is this."""
    for extra in ([], ["--json"]):
        r = run(SITE / name, "--today", TODAY, *extra)
        assert r.returncode == 2 and "no device configs" in r.stderr, r.stdout + r.stderr
        if extra:
            assert "no device configs" in json.loads(r.stdout)["error"]


def test_a_closed_stdout_ends_the_check_quietly(tmp_path):
    """`config check big | head -1` on 2,000 configs: a BrokenPipeError traceback. Now quiet,
    exit 141 (128 + SIGPIPE, as a shell reports it)."""
    cfg = json.loads((SITE / "kitchen-main.json").read_text())
    big = tmp_path / "big"
    big.mkdir()
    for i in range(2000):
        cfg["device_id"] = "dev-%d" % i
        (big / ("d%04d.json" % i)).write_text(json.dumps(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gasguard.tools.cli", "config", "check", str(big)]
        + ["--today", "2040-01-01"],  # past every service life: findings for every config
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()  # what `head -1` reads, then it goes
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert first.startswith(b"error") and err == "", err


# --- --json is JSON only, in every mode --------------------------------------------------------


@pytest.mark.parametrize(
    "args, code",
    [
        ([SITE / "kitchen-main.json"], 0),
        ([SITE / "kitchen-main.json", SITE / "gateway.toml"], 0),
        ([SITE], 0),
        ([SITE, "--today", "2040-01-01"], 1),  # past every service life
        ([SITE, "--today", "30/11/2026"], 2),
        ([SITE / "nowhere.json"], 2),
        ([SITE / "kitchen-main.json", SITE / "nowhere.json"], 2),
    ],
    ids=[
        "one file",
        "several files",
        "site",
        "findings",
        "bad today",
        "missing",
        "missing of two",
    ],
)
def test_json_output_is_json_only(args, code):
    r = run(*args, "--json")
    assert r.returncode == code, r.stdout + r.stderr
    report = json.loads(r.stdout)  # nothing but the one document
    assert ("error" in report) == (code == 2)


def test_config_check_help_is_the_help_of_config_check():
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "config", "check", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0
    assert r.stdout.startswith("usage: gasguard config check ")
    assert "--today" in r.stdout and "--json" in r.stdout
