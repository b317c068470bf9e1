"""The virtual board: the unmodified firmware in the MicroPython unix port with the unix HAL.

Its flash is a directory laid out like the ESP32's (main.py, lib/gasguard/..., config.json,
key.hex, data/). Its pins are on a panel reached over TCP: every output change arrives time-stamped
and inputs (buttons, valve position) can be set. The watchdog is emulated: when the firmware stops
feeding it, the process is killed and restarted with reset cause "wdt". A power cut is SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from gasguard.tools import micropython


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_firmware(flash: Path) -> int:
    """Lay the firmware into a flash directory as a board gets it: .mpy bytecode under
    lib/gasguard (protocol included), main.py and boot.py as source, profiles as JSON.
    Returns the number of files compiled."""
    fw = micropython.firmware_dir()
    jobs = [
        (src, flash / "lib" / "gasguard" / src.relative_to(fw / "lib" / "gasguard"))
        for src in (fw / "lib" / "gasguard").rglob("*.py")
    ]
    proto = micropython.protocol_dir()
    jobs += [
        (src, flash / "lib" / "gasguard" / "protocol" / src.relative_to(proto))
        for src in proto.rglob("*.py")
    ]
    n = 0
    for src, dst in jobs:
        out = dst.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        micropython.mpy_cross(src, out)
        n += 1
    for src in (proto / "profiles").glob("*.json"):
        dst = flash / "lib" / "gasguard" / "protocol" / "profiles" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    for name in ("boot.py", "main.py"):
        shutil.copy(fw / name, flash / name)
    return n


class VirtualBoard:
    def __init__(
        self,
        flash: Path,
        config: dict,
        key: bytes,
        *,
        install: bool = True,
        wdt_timeout_s: float = 2.0,
        heapsize: str = micropython.HEAPSIZE,
    ):
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.panel_port = free_port()
        self.key = key
        self.wdt_timeout_s = wdt_timeout_s
        self.heapsize = heapsize
        if install:
            install_firmware(self.flash)
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self.outputs: dict[str, int] = {}
        self.history: list[tuple[float, str, int]] = []  # (perf_counter, pin, value)
        self.wdt_last = 0.0
        self.wdt_resets = 0
        self.boots = 0
        self._sock: socket.socket | None = None
        self._cv = threading.Condition()
        self._watchdog = False

    # --- lifecycle -------------------------------------------------------------------------------

    def write_config(self) -> None:
        (self.flash / "config.json").write_text(json.dumps(self.config, indent=1))
        (self.flash / "key.hex").write_text(self.key.hex())

    def start(self, reset_cause: str | None = None, watchdog: bool = True) -> VirtualBoard:
        self.write_config()
        (self.flash / "data").mkdir(exist_ok=True)
        if reset_cause:
            (self.flash / "data" / "reset_cause").write_text(reset_cause)
        env = dict(
            os.environ,
            MICROPYPATH=str(self.flash / "lib"),
            GASGUARD_PANEL_PORT=str(self.panel_port),
        )
        self.proc = subprocess.Popen(
            [micropython.find_micropython(), "-X", "heapsize=" + self.heapsize, "main.py"],
            cwd=self.flash,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.boots += 1
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()
        self._connect_panel()
        self.wdt_last = time.perf_counter()
        if watchdog and not self._watchdog:
            self._watchdog = True
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout
        for raw in proc.stdout:
            with self._cv:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cv.notify_all()

    def _connect_panel(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("virtual board exited:\n" + "\n".join(self.lines[-20:]))
            try:
                s = socket.create_connection(("127.0.0.1", self.panel_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "panel did not come up:\n" + "\n".join(self.lines[-20:])
                    ) from None
                time.sleep(0.02)
        s.settimeout(None)
        self._sock = s
        threading.Thread(target=self._read_panel, args=(s,), daemon=True).start()

    def _read_panel(self, s: socket.socket) -> None:
        f = s.makefile("rb")
        while True:
            try:
                raw = f.readline()
            except OSError:  # the board was killed: a power cut looks like this
                return
            if not raw:
                return
            now = time.perf_counter()
            parts = raw.decode(errors="replace").split()
            if not parts:
                continue
            with self._cv:
                if parts[0] == "s":
                    for kv in parts[1:]:
                        k, _, v = kv.partition("=")
                        self.outputs[k] = int(v)
                elif parts[0] == "w":
                    self.wdt_last = now
                elif parts[0] == "o" and len(parts) == 4:
                    self.outputs[parts[2]] = int(parts[3])
                    self.history.append((now, parts[2], int(parts[3])))
                self._cv.notify_all()

    def _watch(self) -> None:
        while self._watchdog:
            time.sleep(0.05)
            p = self.proc
            if p is None or p.poll() is not None:
                continue
            if time.perf_counter() - self.wdt_last > self.wdt_timeout_s:
                self.wdt_resets += 1
                self.kill()
                self.start(reset_cause="wdt", watchdog=False)

    def kill(self) -> None:
        """Power cut: SIGKILL, nothing gets to run."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._cv:
            self.outputs = {}

    def power_cycle(self) -> None:
        self.kill()
        self.start(watchdog=False)

    def stop(self) -> None:
        self._watchdog = False
        self.kill()

    # --- panel -----------------------------------------------------------------------------------

    def set_input(self, pin: str, value: int) -> None:
        assert self._sock is not None
        self._sock.sendall(b"%s %d\n" % (pin.encode(), value))

    def inject_fault(self, kind: str) -> None:
        """'crash' raises inside the firmware, 'hang' makes its loop stop returning."""
        assert self._sock is not None
        self._sock.sendall(b"fault %s\n" % kind.encode())

    def press(self, button: str, hold_s: float = 0.15) -> None:
        active = 0 if self.config.get("pins", {}).get("buttons_active_low", True) else 1
        self.set_input(button, active)
        time.sleep(hold_s)
        self.set_input(button, 1 - active)

    def wait_output(self, pin: str, value: int, timeout: float = 5.0) -> float:
        """Wait until output `pin` reads `value`; returns the perf_counter time it changed."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.outputs.get(pin) != value:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "%s never became %d; last lines:\n%s"
                        % (pin, value, "\n".join(self.lines[-15:]))
                    )
                self._cv.wait(left)
            for t, p, v in reversed(self.history):
                if p == pin and v == value:
                    return t
            return time.perf_counter()

    def wait_line(self, text: str, timeout: float = 5.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "no line with %r; last lines:\n%s" % (text, "\n".join(self.lines[-15:]))
                    )
                self._cv.wait(left)

    def events(self) -> list[str]:
        return [line for line in self.lines if line.startswith("EVENT ")]

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
