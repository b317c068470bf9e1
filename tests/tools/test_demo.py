"""The README's first command: `gasguard demo` runs the whole site to its summary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_demo_prints_no_path_it_deletes_and_names_detectors_as_everywhere():
    """Issue 22: the demo printed a ledger path deleted when it exits, and called the detector
    "Modbus address 1" where the console said "det 0"."""
    r = run_demo(None)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
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
