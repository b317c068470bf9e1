"""The README's first command: `gasguard demo` runs the whole site to its summary."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from gasguard.tools.sim.brokers import free_port

ROOT = Path(__file__).resolve().parents[2]
# the demo's ingest takes a one-per-machine lock in the temporary directory: this session's own,
# so another checkout's tests running a demo at the same time are not in the way
ENV = dict(os.environ, TMPDIR=tempfile.mkdtemp(prefix="gasguard-demo-test-"))


def readme_demo_command() -> str:
    """The README's first quick-start command, after its set-up step (which CI has just run)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.S)
    assert block, "README has no quick start block"
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2, commands  # the demo, then the test suite
    setup, _, demo = commands[0].rpartition("&&")
    assert setup.strip() == "bash scripts/setup.sh" and " demo" in demo, commands[0]
    assert commands[1] == "bash scripts/test.sh"
    return demo.strip()


def run_demo(ledger):
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "gasguard"), "demo", "--duration", "60"]
        + (["--ledger", str(ledger)] if ledger else []),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
        env=ENV,
    )


def assert_every_event_delivered(out: str, devices) -> None:
    """Each board's row in the summary: as many events in the regulator's ledger as it
    logged."""
    summary = out.split("== summary ==")[1]
    for dev in devices:
        line = next(x for x in summary.splitlines() if x.split()[:1] == [dev])
        logged, delivered = [int(w) for w in line.split() if w.isdigit()][:2]
        assert logged == delivered > 0, line


def test_demo_runs_the_site_to_a_closed_incident(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    cmd = readme_demo_command()
    assert cmd == ".venv/bin/gasguard demo"
    r = run_demo(ledger)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    # the story a newcomer reads, in order
    steps = [
        "broker: mosquitto (MQTT 5)",
        "valves open",
        "LEAK:",
        "valve CLOSED",
        "buzzer silent",
        "reset refused",
        "the gas clears",
        "valve OPEN again",
        "== summary ==",
        "demo complete",
    ]
    at = [out.find(s) for s in steps]
    assert -1 not in at and at == sorted(at), out
    assert "incidents in the ledger: 1" in out
    assert "closed (valve reset on site)" in out
    assert_every_event_delivered(out, ("hotpot-88-main", "hotpot-88-back"))

    # the kept ledger's incidents: one, closed, with its steps
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gasguard.tools.cli",
            "regulator",
            "incidents",
            "--ledger",
            str(ledger),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = r.stdout.strip().splitlines()
    assert len(rows) == 2 and rows[0].startswith("incident,site,device")
    assert ",hotpot-88-main,high," in rows[1] and ",closed," in rows[1]


def test_the_demo_run_twice_against_one_ledger_passes_both_times(tmp_path):
    """Each run's boards are new boards (fresh flash: boot counters at 1 again). Their events
    carry the boards' instance ids, so the second run's alarm is a new incident, not a
    duplicate of the first run's (issue 19 item 8)."""
    ledger = tmp_path / "ledger.sqlite"
    for run in (1, 2):
        r = run_demo(ledger)
        assert r.returncode == 0, "run %d:\n%s" % (run, r.stdout[-3000:] + r.stderr[-2000:])
        assert "incidents in the ledger: %d" % run in r.stdout, r.stdout[-2000:]
        # each run counts its own boards' events, not the ledger's earlier runs
        assert_every_event_delivered(r.stdout, ("hotpot-88-main", "hotpot-88-back"))


def log_in(base: str, name: str, password: str) -> urllib.request.OpenerDirector:
    """A browser's cookies and the login form's CSRF token, as a person logs in."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    page = opener.open(base + "login", timeout=10).read().decode()
    assert "登录" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"name": name, "password": password, "csrf": token})
    landed = opener.open(base + "login", data=form.encode(), timeout=10)
    assert landed.url.endswith("/alarms"), landed.url
    return opener


def test_the_demo_prints_no_path_it_deletes_and_names_detectors_as_everywhere():
    """Issue 22: the demo printed a ledger path deleted when it exits, and called the detector
    "Modbus address 1" where the console said "det 0". Run with --web (issue 24): the console
    stays up on the run's ledger with the login it prints, until Ctrl-C, which exits 0."""
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gasguard"), "demo", "--duration", "60", "--web",
         "--listen", "127.0.0.1:%d" % port],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True, env=ENV,
    )  # fmt: skip
    try:
        lines = []
        deadline = time.monotonic() + 90
        while not any(x.startswith("the site keeps running") for x in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)[-3000:]
            lines.append(line)
        printed = "".join(lines)
        base = re.search(r"^console: (http://127\.0\.0\.1:%d/) " % port, printed, re.M).group(1)
        login = re.search(r"^log in as (\S+) with password (\S+):", printed, re.M)
        browser = log_in(base, *login.groups())
        unit = browser.open(base + "units/sh-xuhui-0042", timeout=10).read().decode()
        assert "火锅88（天平路店）" in unit and "hotpot-88-main" in unit and "高报" in unit
        assert "sh-xuhui-0042" in browser.open(base + "hazards", timeout=10).read().decode()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed check: stop the demo as Ctrl-C would, so it stops
            proc.send_signal(signal.SIGINT)  # its ingest, gateway and boards too
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    out = printed + rest
    assert proc.returncode == 0, out[-3000:] + err[-2000:]
    assert "stopping" in rest
    with pytest.raises(OSError):  # the console is gone with it
        urllib.request.urlopen(base + "login", timeout=5)
    assert "ledger: not kept (give --ledger FILE" in out
    for word in out.split():
        if word.startswith("/") and "gasguard-demo-" in word:  # a path into the run's own dir
            assert Path(word.strip("():,")).exists(), word
    assert "LEAK: detector 1 (Modbus address 1) in hotpot-88-main" in out
    leak = next(x for x in out.splitlines() if "regulator |" in x and "alarm.high" in x)
    assert "detector 1 " in leak and "det 0" not in leak, leak
    summary = out.split("== summary ==")[1]
    assert "None" not in summary, summary
    assert_every_event_delivered(out, ("hotpot-88-main", "hotpot-88-back"))


def test_the_demo_web_on_a_taken_port_fails_before_the_site_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "gasguard"), "demo", "--web", "--listen",
             "127.0.0.1:%d" % taken.getsockname()[1]],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
        )  # fmt: skip
    assert r.returncode == 2 and "in use" in r.stderr, r.stderr
    assert "broker:" not in r.stdout  # nothing was started
