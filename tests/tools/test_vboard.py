"""`gasguard vboard`, a virtual board a tester can trust (issue 19 item 11): the installer's config
file reaches the firmware's flash byte for byte, a hostile config boots the board into its
config-error state instead of a traceback, `--bus external` runs at the configured baud rate, and
a firmware that crashes before its panel exists is reported as such, never as a closed valve."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from gasguard.tools.image import install_firmware

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"


class Vboard:
    """`gasguard vboard` as a tester starts it: its endpoints line, its console on stderr."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gasguard.tools.cli", "vboard", "--config", str(config)]
            + list(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read_err, daemon=True)
        self._reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def endpoints(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "no endpoints: " + self.stop()
        return json.loads(line)

    def wait_err(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err):
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError("no %r on stderr:\n%s" % (text, "".join(self.err[-30:])))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(20)
        self._reader.join(5)
        return "".join(self.err)


def test_the_config_file_reaches_the_flash_byte_for_byte(tmp_path):
    # as an installer's editor may save it: a byte order mark, CRLF line ends, keys reordered
    cfg = json.loads(EXAMPLE.read_text())
    text = json.dumps(dict(reversed(list(cfg.items()))), indent="\t").replace("\n", "\r\n")
    raw = b"\xef\xbb\xbf" + text.encode()
    path = tmp_path / "kitchen.json"
    path.write_bytes(raw)
    vb = Vboard(path, "--flash", str(tmp_path / "flash"))
    try:
        ep = vb.endpoints()
        assert ep["device_id"] == "hotpot-88-main"
        vb.wait_err("GASGUARD RUNNING hotpot-88-main")
        # the pty paths went through the environment, never into the file
        assert (tmp_path / "flash" / "config.json").read_bytes() == raw
    finally:
        err = vb.stop()
    assert "Traceback" not in err


def test_a_hostile_config_boots_into_config_error_not_a_traceback(tmp_path):
    cfg = json.loads(EXAMPLE.read_text())
    cfg["bus"] = 5  # a number where an object is expected
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(cfg))
    vb = Vboard(path, "--flash", str(tmp_path / "flash"))
    try:
        ep = vb.endpoints()
        assert ep["repl"] and ep["panel"]
        line = vb.wait_err("CONFIG ERROR")
        assert "bus" in line
    finally:
        err = vb.stop()
    assert "Traceback" not in err


def _read_frames(fd: int, n: int, timeout: float = 10) -> list[list[float]]:
    """Arrival times of each byte of the first n 8-byte requests on the far end of the bus."""
    times: list[float] = []
    deadline = time.monotonic() + timeout
    while len(times) < 8 * n and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            data = os.read(fd, 64)
            now = time.perf_counter()
            times += [now] * len(data)
    assert len(times) >= 8 * n, "the board sent %d bytes" % len(times)
    return [times[i : i + 8] for i in range(0, 8 * n, 8)]


def test_external_bus_runs_at_the_configured_baud_rate(tmp_path):
    cfg = json.loads(EXAMPLE.read_text())
    cfg["bus"]["baud"] = 4800
    cfg["link"] = {"kind": "none"}
    path = tmp_path / "slow-bus.json"
    path.write_text(json.dumps(cfg))
    vb = Vboard(path, "--bus", "external", "--flash", str(tmp_path / "flash"))
    try:
        ep = vb.endpoints()
        fd = os.open(ep["bus"], os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            frames = _read_frames(fd, 3)
        finally:
            os.close(fd)
    finally:
        vb.stop()
    char_s = 11 / 4800
    for f in frames:  # 8 characters take 7 character times from the first to the last
        assert f[-1] - f[0] >= 0.8 * 7 * char_s, [round(t - f[0], 4) for t in f]


def test_paced_cable_paces_both_ways():
    from gasguard.tools.sim.linepacer import PacedCable

    cable = PacedCable(9600).start()
    fds = []
    try:
        for path in (cable.a_path, cable.b_path):
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd)
            fds.append(fd)
        for src, dst in ((fds[0], fds[1]), (fds[1], fds[0])):
            t0 = time.perf_counter()
            os.write(src, bytes(range(48)))
            got = b""
            while len(got) < 48 and time.perf_counter() - t0 < 5:
                r, _, _ = select.select([dst], [], [], 0.2)
                if r:
                    got += os.read(dst, 64)
            took = time.perf_counter() - t0
            assert got == bytes(range(48))
            assert took >= 0.9 * 48 * 11 / 9600, took  # 55 ms at 9600 baud
    finally:
        for fd in fds:
            os.close(fd)
        cable.stop()


def test_a_crash_before_the_panel_exists_is_not_a_closed_valve(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    install_firmware(flash)
    hal = flash / "lib" / "gasguard" / "hal" / "unix.mpy"
    hal.write_bytes(b"half a file")  # a flash cut off while the HAL was being written
    vb = Vboard(EXAMPLE, "--flash", str(flash))
    try:
        rc = vb.proc.wait(30)
    finally:
        err = vb.stop()
    assert rc == 1, err
    assert "firmware crashed at boot, outputs undriven" in err
    assert "hal" in err or "mpy" in err  # the console's last lines say what broke
    assert "tools/sim/vboard" not in err  # the firmware's traceback, not the harness's
