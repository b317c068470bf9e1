"""The command line's one convention (issue 22): every --help states the exit codes, --json
output is JSON and nothing else, missing figures are never "None", times are local with their
offset, and a detector has one name whatever says it."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gasguard.tools import exitcodes, human
from gasguard.tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"
CODES = [
    "0  ok",
    "1  check failed",
    "2  bad usage or bad input",
    "3  device or service unreachable",
]


def gasguard(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command line that has a --help of its own: ("bench",), ("regulator", "watch"), ..."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,))


def test_every_help_states_the_exit_codes(capsys):
    found = list(commands(build_parser()))
    assert ("regulator", "watch") in found and ("commission",) in found and len(found) >= 12
    for path in found:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*path, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert all(code in text for code in CODES), (path, text)


def test_the_readme_command_table_states_the_exit_codes():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## The `gasguard` command", 1)[1].split("\n\n", 2)[1]
    assert "exit codes" in table.lower()
    assert all(code.split("  ")[1] in table for code in CODES), table


def test_config_check_help_is_its_own(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["config", "check", "--help"])
    assert "usage: gasguard config check" in capsys.readouterr().out


def test_usage_errors_still_exit_2():
    r = gasguard("commission", "--bogus")
    assert r.returncode == exitcodes.BAD_INPUT and "usage:" in r.stderr
    assert r.stdout == ""  # no --json: stdout stays empty


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "check", "--json"],  # the path missing
        ["config", "check", str(EXAMPLE), "--json", "--bogus"],
        ["flash", "--json", "--config", str(EXAMPLE)],  # --port missing
        ["--json"],
    ],
    ids=["missing argument", "unknown option", "subcommand", "top level"],
)
def test_usage_errors_with_json_print_a_json_error(argv):
    """Issue 22 attack L6: a usage error with --json printed nothing on stdout, so a script
    reading it got no document. It gets one, and still exit 2 with the usage on stderr."""
    r = gasguard(*argv)
    assert r.returncode == exitcodes.BAD_INPUT and "usage:" in r.stderr, r.stdout + r.stderr
    doc = json.loads(r.stdout)  # the whole of stdout
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["error"], doc
    assert "Traceback" not in r.stderr


def test_a_closed_stdout_is_a_quiet_exit_141():
    """CLI-wide: the reader of stdout gone (`| head -1`) ends any command with exit 141 and no
    BrokenPipeError traceback (tests/tools/test_sitecheck.py pipes a 2,000-config site)."""
    import gasguard.tools.cli as cli

    code = (
        "import sys\n"
        "from gasguard.tools import cli\n"
        "def run(args):\n"
        "    for i in range(100000):\n"
        "        print('line %d' % i)\n"
        "    return 0\n"
        "p = cli.build_parser\n"
        "def build():\n"
        "    parser = p()\n"
        "    parser.set_defaults(command='x', run=run)\n"
        "    return parser\n"
        "cli.build_parser = build\n"
        "sys.exit(cli.main([]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == cli.BROKEN_PIPE == 141 and err == "", err


@pytest.mark.parametrize("config, code", [(EXAMPLE, 0), (None, 1)])
def test_config_check_json_is_json_only(tmp_path, config, code):
    if config is None:  # a config with errors: the findings are still JSON, and only JSON
        config = tmp_path / "bad.json"
        config.write_text('{"device_id": "x"}')
    r = gasguard("config", "check", str(config), "--json", "--today", "2026-11-30")
    found = json.loads(r.stdout)  # the whole of stdout, nothing before or after
    assert r.returncode == code and (found["errors"] > 0) == bool(code), r.stdout + r.stderr


def test_vboard_prints_its_endpoints_as_json_only():
    proc = subprocess.Popen(
        [sys.executable, "-m", "gasguard.tools.cli", "vboard", "--config", str(EXAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        first = proc.stdout.readline()
        endpoints = json.loads(first)
        assert {"repl", "link"} <= set(endpoints), endpoints
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=20)[0]
    # nothing but the one JSON line on stdout (the board's console goes to stderr)
    assert rest.strip() == "", rest


def test_bench_json_file_holds_the_figures_only(tmp_path):
    out = tmp_path / "heap.json"
    r = gasguard("bench", "firmware-heap", "--cycles", "20", "--json", str(out), timeout=300)
    figures = json.loads(out.read_text())  # the file is JSON, nothing printed mixed into it
    assert figures["cycles"] == 20 and r.returncode in (0, 1), r.stderr
    assert "heap free after boot" in r.stdout and "None" not in r.stdout  # the table: stdout


def test_regulator_watch_exits_3_when_the_database_never_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    r = gasguard("regulator", "watch", "--db", "postgresql://regulator@127.0.0.1:%d/city" % port,
                 "--once")  # fmt: skip
    assert r.returncode == exitcodes.UNREACHABLE, r.stdout + r.stderr
    assert "database unreachable" in r.stderr and "127.0.0.1" in r.stderr
    assert time.monotonic() - t0 < 20


def test_gateway_status_shows_no_none():
    from gasguard.gateway.status import render

    st = {
        "gateway": "gw-1", "site": "s", "version": "0.1.0", "instance": None, "boot": 1,
        "uptime_s": 3.0,
        "broker": {"url": "mqtt://127.0.0.1:1883", "connected": True, "connects": 1,
                   "last_error": None},
        "events": {"received": 0, "committed": 0, "duplicates": 0, "published": 0,
                   "dropped_by_retention": 0},
        "outbox": {"depth": 0, "commit_ms": {"p50": None, "p99": None}},
        "publish_latency_ms": {"p50": None, "p99": None, "alarm_p99": None},
        "frames": {}, "devices_online": 0,
        "devices": {"kitchen-1": {"online": False, "instance": None, "valve": None,
                                  "alarm": None, "lost": None, "pending": None}},
    }  # fmt: skip
    text = render(st)
    assert "None" not in text, text
    assert "alarms p99 — (no alarms yet)" in text


@pytest.fixture
def shanghai():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_times_are_local_with_the_offset_shown(shanghai):
    assert human.local_time("2026-11-30T13:05:12Z") == "2026-11-30 21:05:12 +08:00"
    assert human.local_time(None) == "—"


def test_the_regulator_names_detectors_and_shows_local_time(shanghai, tmp_path):
    """The stream carries a detector's place counted from 0 and UTC: the regulator says
    "detector 1" (as commission and the demo do) and the kitchen's own clock."""
    from gasguard.protocol import cloudevents, messages
    from gasguard.regulator import boundary, console, views
    from gasguard.regulator.store import open_store

    body = messages.event(1, 1, "alarm.high", 60, det=0, lel=62.0)
    ev = cloudevents.device_event("site-9", "kitchen-1", "5f3a9c1e0b7d4a26", body, 1764000000.0)
    store = open_store(str(tmp_path / "regulator.db"), create=True)
    store.write([boundary.check(cloudevents.topic_events("site-9", "kitchen-1"),
                                json.dumps(ev).encode())])  # fmt: skip
    (row,) = store.rows("SELECT * FROM events")
    line = console.event_line(row)
    assert "detector 1 62.0 %LEL" in line and "det 0" not in line, line
    utc = ev["time"]
    assert line.startswith(human.local_time(utc)) and "+08:00" in line, (line, utc)
    screen = console.render(views.snapshot(store, views.Filters()), 24)
    store.close()
    assert "None" not in screen and "+08:00" in screen, screen
    assert "open incidents: 1" in screen and "site-9/kitchen-1" in screen, screen
