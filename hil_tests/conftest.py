"""The HIL suite's rig fixture.

Default (CI): every scenario runs twice, on the VirtualRig and on the BoardRig wired to a virtual
board through its serial interfaces (`gasguard vboard --bus external`). With --board PORT the
suite runs on a real ESP32 instead; see hil_tests/README.md for wiring and commands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gasguard.tools.sim import micropython

from .rigs.base import Rig
from .rigs.board_rig import BoardRig
from .rigs.virtual_rig import VirtualRig

HERE = Path(__file__).parent
STARTS: list[tuple[str, str]] = []  # (rig, reset cause) of every firmware start the suite saw


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gasguard HIL")
    g.addoption("--board", metavar="PORT", help="real board: its gateway-link serial port")
    g.addoption("--bus", metavar="PORT", help="real board: USB-RS485 adapter on its detector bus")
    g.addoption("--io", metavar="ADDR", help="GPIO feedback adapter (tcp:HOST:PORT or a port)")
    g.addoption("--console", metavar="PORT", help="the board's REPL port (to reboot it)")
    g.addoption(
        "--hil-config",
        metavar="FILE",
        default=str(HERE / "board-config.json"),
        help="the device config the board was flashed with",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rig" in metafunc.fixturenames:
        rigs = ["board"] if metafunc.config.getoption("--board") else ["virtual", "board@vboard"]
        metafunc.parametrize("rig", rigs, indirect=True)


def _config(request: pytest.FixtureRequest) -> tuple[dict, bytes, Path]:
    path = Path(request.config.getoption("--hil-config"))
    cfg = json.loads(path.read_text())
    return cfg, bytes.fromhex(cfg["key_hex"]), path


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path):
    cfg, key, path = _config(request)
    kind = request.param
    proc = None
    r: Rig
    if kind == "virtual":
        r = VirtualRig(tmp_path / "flash", cfg, key)
    elif kind == "board":
        opt = request.config.getoption
        if not opt("--bus"):
            pytest.exit("--board needs --bus (the USB-RS485 adapter on the detector bus)", 2)
        r = BoardRig(opt("--board"), opt("--bus"), cfg, key, opt("--io"), opt("--console"))
    else:  # the BoardRig against a virtual board, through the same four serial interfaces
        proc = subprocess.Popen(
            [sys.executable, "-m", "gasguard.tools.cli", "vboard", "--config", str(path)]
            + ["--bus", "external", "--flash", str(tmp_path / "flash")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            pytest.fail("gasguard vboard did not start (exit %s)" % proc.wait(10))
        ep = json.loads(line)
        r = BoardRig(ep["link"], ep["bus"], cfg, key, io="tcp:" + ep["panel"], console=ep["repl"])
    try:
        yield r
    finally:
        STARTS.extend((kind, c) for c in r.boot_causes)
        r.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def pytest_report_header(config: pytest.Config) -> str:
    return "gasguard HIL: firmware in MicroPython %s unix port, -X heapsize=%s" % (
        micropython.version(),
        micropython.HEAPSIZE,
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if STARTS:
        rigs = sorted({k for k, _ in STARTS})
        terminalreporter.write_line(
            "gasguard HIL: %d firmware starts observed in the MicroPython VM (rigs: %s)"
            % (len(STARTS), ", ".join(rigs))
        )
