"""The virtual board: the unmodified firmware in the MicroPython unix port with the unix HAL.

Its console is a pty that is the process's controlling terminal, relayed to a REPL pty that
survives restarts (like a board's USB serial port): Ctrl-C there stops the loop in the safe state
and `mpremote connect <pty> resume ...` works. A process that exits by itself is rebooted (Ctrl-D
at the REPL is a soft reset). Its flash is a directory laid out like the ESP32's (main.py,
lib/gasguard/..., config.json, key.hex, data/), or with the bytecode in a ROMFS image instead of
lib/ (`layout="romfs"`, see firmware/rom.py). Its pins are on a panel reached over TCP: every
output change arrives time-stamped and inputs (buttons, valve position) can be set. The watchdog is
emulated: when the firmware stops feeding it, the process is killed and restarted with reset cause
"wdt". A power cut is SIGKILL.

The config file can be handed over byte for byte (`raw`), as an installer wrote it; the ptys of
the detector bus and the gateway link then reach the firmware through the environment
(GASGUARD_BUS_PATH, GASGUARD_LINK_PATH), never through the file. A firmware that dies before
its panel exists (a module missing after a broken flash, a HAL that cannot load) is a BootCrash:
"firmware crashed at boot, outputs undriven", which is not a board up with its valve closed.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path

from gasguard.tools.image import install_firmware
from gasguard.tools.sim import micropython

CRASHED = "firmware crashed at boot, outputs undriven"
# what firmware/main.py says before it resets the board into the previous install: the unix port
# has no machine.reset(), so the harness does it (the process ends and the board reboots)
RESET_REQUEST = "restarting into the previous one"


class BootCrash(RuntimeError):
    """The firmware ended (or fell into its REPL) before its panel existed: no output is
    driven, nothing feeds a watchdog. The message carries the console's last lines."""


def _field(cfg: object, *keys: str, default: object = None) -> object:
    """cfg[k1][k2]... or default, whatever the (possibly hostile) config holds."""
    for k in keys:
        if not isinstance(cfg, dict) or k not in cfg:
            return default
        cfg = cfg[k]
    return cfg


def free_port() -> int:
    """A free port below the kernel's ephemeral range. The board binds its panel at every
    boot, long after the port is chosen: a port from the ephemeral range may meanwhile be the
    local end of any outgoing connection on the machine (another test run's database or
    broker client), and the board's bind fails (EADDRINUSE). Below that range only listeners
    compete, and a random choice among thousands rarely meets another's."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # every port tried was taken: let the kernel pick one
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VirtualBoard:
    def __init__(
        self,
        flash: Path,
        config: dict,
        key: bytes | None,
        *,
        install: bool = True,
        wdt_timeout_s: float = 2.0,
        heapsize: str = micropython.HEAPSIZE,
        valve_travel_s: float | None = None,
        layout: str = "files",
        raw: bytes | None = None,
        bus_path: str | None = None,
        link_path: str | None = None,
    ):
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        # what the harness reads (valve kind, buttons); the firmware gets `raw` when given
        self.config = dict(config) if isinstance(config, dict) else {}
        self.raw = raw
        self.bus_path = bus_path
        self.link_path = link_path
        self.panel_port = free_port()
        self.key = key  # None: no key.hex (the firmware takes the config's key_hex)
        self.wdt_timeout_s = wdt_timeout_s
        # A valve body on the position input: after each change of the valve output it reports
        # the new position this much later (None: no valve attached, the harness sets it).
        self.valve_travel_s = valve_travel_s
        # the valve body's position (True: open), kept across reboots and power cuts: a latching
        # valve stays where it is without power; an NC valve's spring closes it
        self.valve_open = False
        self.heapsize = heapsize
        if install:
            install_firmware(self.flash, layout)
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self.outputs: dict[str, int] = {}
        self.history: list[tuple[float, str, int]] = []  # (perf_counter, pin, value)
        self.wdt_last = 0.0
        self.wdt_resets = 0
        self.boots = 0
        self._sock: socket.socket | None = None
        self._cv = threading.Condition()
        self._life = threading.RLock()  # process lifecycle: kill, start, the supervisor
        self._watchdog = False
        self.maintenance = False  # the loop was stopped from the console: no watchdog emulation
        self.restarts = 0  # reboots after the process ended by itself (soft reset, emulated WDT)
        self._console_fd = -1  # master side of the running process's console pty
        self._killing = False
        self._reset_asked = False  # the firmware asked for a reset (RESET_REQUEST)
        # the REPL pty: what an installer (or mpremote) opens; the same path across reboots
        self._repl_m, self._repl_s = os.openpty()
        tty.setraw(self._repl_s)
        os.set_blocking(self._repl_m, False)
        self.repl_path = os.ttyname(self._repl_s)
        self._closed = False
        self.boot_crash: str | None = None  # set when the firmware died before its panel
        self._mark = 0  # where the running boot's console lines start
        threading.Thread(target=self._relay_repl, daemon=True, name="vboard-repl").start()

    # --- lifecycle -------------------------------------------------------------------------------

    def write_config(self) -> None:
        raw = self.raw if self.raw is not None else json.dumps(self.config, indent=1).encode()
        (self.flash / "config.json").write_bytes(raw)
        if self.key is not None:
            (self.flash / "key.hex").write_text(self.key.hex())

    def installed(self) -> Path:
        """The directory of the install the board boots: what gg/current names first (see
        firmware/main.py), or the flash's root as the bench lays a board out."""
        ptr = self.flash / "gg" / "current"
        try:
            name = ptr.read_text().split()[0]
        except (OSError, IndexError):
            name = "."
        return self.flash if name == "." else self.flash / "gg" / name

    def start(self, reset_cause: str | None = None, watchdog: bool = True) -> VirtualBoard:
        with self._life:  # the supervisor must not see the old process half replaced
            return self._start(reset_cause, watchdog)

    def _start(self, reset_cause: str | None, watchdog: bool) -> VirtualBoard:
        if self.boots == 0:  # provisioning; later boots keep what is on flash (mpremote may
            self.write_config()  # have written a new config.json)
        (self.flash / "data").mkdir(exist_ok=True)
        if reset_cause:
            (self.flash / "data" / "reset_cause").write_text(reset_cause)
        env = dict(
            os.environ,
            MICROPYPATH=str(self.flash / "lib"),
            GASGUARD_PANEL_PORT=str(self.panel_port),
        )
        # the wiring, outside the config file (a config's own bus.path or link.path wins)
        for name, path in (("GASGUARD_BUS_PATH", self.bus_path),
                           ("GASGUARD_LINK_PATH", self.link_path)):  # fmt: skip
            env.pop(name, None)
            if path is not None:
                env[name] = path
        if self.valve_travel_s is not None:  # a valve body on the position input
            if _field(self.config, "valve", "kind", default="nc") != "latching":
                self.valve_open = False  # unpowered since the last process: the spring closed it
            env["GASGUARD_PANEL_INPUTS"] = "valve_pos=%d" % self._pos_level(self.valve_open)
        # the console pty: raw, but Ctrl-C still raises SIGINT (KeyboardInterrupt), as on a board
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.maintenance = False
        self._killing = False
        self._reset_asked = False
        self.boot_crash = None
        with self._cv:
            self._mark = len(self.lines)  # this boot's console starts here
        self.proc = subprocess.Popen(
            [
                micropython.find_micropython(),
                "-X",
                "heapsize=" + micropython.heapsize_for(self.flash, self.heapsize),
                "-i",
                "main.py",
            ],
            cwd=self.flash,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=controlling_tty,
        )
        os.close(slave)
        self._console_fd = master
        self.boots += 1
        threading.Thread(target=self._read_console, args=(master,), daemon=True).start()
        self._connect_panel()
        self.wdt_last = time.perf_counter()
        if watchdog and not self._watchdog:
            self._watchdog = True
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _read_console(self, fd: int) -> None:
        partial = b""
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the process is gone
                data = b""
            if not data:
                break
            try:  # the REPL side may have nobody reading: never block on it
                os.write(self._repl_m, data)
            except OSError:
                pass
            partial += data
            *done, partial = partial.split(b"\n")
            if done:
                with self._cv:
                    for raw in done:
                        line = raw.decode(errors="replace").rstrip("\r")
                        self.lines.append(line)
                        if line.startswith("STOPPED from the console"):
                            self.maintenance = True
                        if RESET_REQUEST in line:
                            self._reset_asked = True
                            threading.Thread(target=self._reset, args=(self.proc,),
                                             daemon=True).start()  # fmt: skip
                    self._cv.notify_all()
        os.close(fd)

    def _relay_repl(self) -> None:
        # REPL pty -> console of whichever process is running now
        import select

        while not self._closed:
            r, _, _ = select.select([self._repl_m], [], [], 0.2)
            if not r:
                continue
            try:
                data = os.read(self._repl_m, 4096)
            except OSError:
                continue
            fd = self._console_fd
            if fd >= 0:
                if b"\x03" in data and self._interrupt(fd):
                    data = data.replace(b"\x03", b"")
                try:
                    os.write(fd, data)
                except OSError:
                    pass

    def _interrupt(self, fd: int) -> bool:
        # Ctrl-C while code runs from the raw REPL (gasguard commission's bump test): an ESP32's
        # UART takes it as KeyboardInterrupt whatever the code does, but the unix port runs
        # raw-REPL code with its terminal's signals off. Raised here as the board would, only
        # while the interpreter catches SIGINT (code running) and its terminal would not.
        proc = self.proc
        try:
            if proc is None or termios.tcgetattr(fd)[3] & termios.ISIG:
                return False
            with open("/proc/%d/status" % proc.pid) as f:
                caught = next(int(x.split()[1], 16) for x in f if x.startswith("SigCgt:"))
            if not caught & (1 << (signal.SIGINT - 1)):
                return False
            proc.send_signal(signal.SIGINT)
            return True
        except (OSError, StopIteration, termios.error):
            return False

    def _reset(self, proc: subprocess.Popen[bytes] | None) -> None:
        # machine.reset() as the board does it: the process ends, the supervisor reboots it
        time.sleep(0.2)  # its last console lines first
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    def _crashed(self) -> bool:
        # the process ended, or main.py ended and `-i` left the interpreter at its REPL (what a
        # board does when main.py raises): either way nothing drives the outputs
        if self.proc is not None and self.proc.poll() is not None:
            return True
        with self._cv:
            return any(line.startswith('Type "help()"') for line in self.lines[self._mark :])

    def _connect_panel(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if self._reset_asked:  # it reset itself before its panel: the supervisor reboots it
                return
            if self._crashed():
                time.sleep(0.1)  # the last console lines are still on their way
                if self._reset_asked:
                    return
                self.boot_crash = "%s:\n%s" % (CRASHED, "\n".join(self.lines[-20:]))
                raise BootCrash(self.boot_crash)
            try:
                s = socket.create_connection(("127.0.0.1", self.panel_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BootCrash(
                        "the panel did not come up within 10 s (%s?):\n%s"
                        % (CRASHED, "\n".join(self.lines[-20:]))
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
                if parts[0] == "m":
                    self.maintenance = True
                elif parts[0] == "s":
                    for kv in parts[1:]:
                        k, _, v = kv.partition("=")
                        self.outputs[k] = int(v)
                elif parts[0] == "w":
                    self.wdt_last = now
                elif parts[0] == "o" and len(parts) == 4:
                    self.outputs[parts[2]] = int(parts[3])
                    self.history.append((now, parts[2], int(parts[3])))
                    if parts[2] == "valve" and self.valve_travel_s is not None:
                        self._valve_moves(int(parts[3]))
                self._cv.notify_all()

    def _pos_level(self, is_open: bool) -> int:
        open_level = 0 if _field(self.config, "valve", "position_open_level") == 0 else 1
        return open_level if is_open else 1 - open_level

    def _valve_moves(self, out: int) -> None:
        if _field(self.config, "valve", "kind", default="nc") != "latching":
            is_open = out == 1  # energised: open; de-energised: the spring closes it
        elif out == 1:
            is_open = False  # a latching valve's trip coil fired: the latch drops
        else:
            return  # the coil released: the valve stays where it is until a person acts
        level = self._pos_level(is_open)
        sock = self._sock

        def arrive() -> None:
            if self._sock is sock and sock is not None:
                self.valve_open = is_open
                try:
                    sock.sendall(b"valve_pos %d\n" % level)
                except OSError:
                    pass  # the board went down while the valve moved

        t = threading.Timer(self.valve_travel_s or 0.0, arrive)
        t.daemon = True
        t.start()

    def _watch(self) -> None:
        # The board's supervisor: the emulated watchdog, and a reboot whenever the process ends
        # by itself (a soft reset from the REPL, or the firmware's own emulated watchdog exit).
        while self._watchdog:
            time.sleep(0.05)
            with self._life:  # never decide while kill() or start() is half done
                p = self.proc
                if p is None or self._killing or not self._watchdog:
                    continue
                rc = p.poll()
                try:
                    if rc is not None:
                        self.restarts += 1
                        self._close_panel()
                        self.start(reset_cause="wdt" if rc == 3 else "soft", watchdog=False)
                        continue
                    if self.maintenance:
                        continue
                    if time.perf_counter() - self.wdt_last > self.wdt_timeout_s:
                        self.wdt_resets += 1
                        self.kill()
                        self.start(reset_cause="wdt", watchdog=False)
                except BootCrash:
                    # as a board: no watchdog runs before the firmware starts one, so it stays
                    # down, outputs undriven, until someone flashes or power-cycles it
                    self._watchdog = False
                    with self._cv:
                        self.lines.append("VBOARD: " + CRASHED)
                        self._cv.notify_all()

    def _close_panel(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._cv:
            self.outputs = {}

    def kill(self) -> None:
        """Power cut: SIGKILL, nothing gets to run."""
        with self._life:
            self._killing = True
            p = self.proc
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(5)
            self._close_panel()

    def console_write(self, data: bytes) -> None:
        """Type on the console, as an installer's terminal does (b"\\x03" is Ctrl-C)."""
        os.write(self._console_fd, data)

    def interrupt(self) -> None:
        """Ctrl-C on the console: the loop stops in the safe state and the REPL comes up."""
        self.console_write(b"\x03")

    def power_cycle(self) -> None:
        with self._life:
            self.kill()
            self.start(watchdog=False)

    def stop(self) -> None:
        self._watchdog = False
        self.kill()
        if not self._closed:
            self._closed = True
            time.sleep(0.25)  # let the relay thread notice before its fds go
            for fd in (self._repl_m, self._repl_s):
                try:
                    os.close(fd)
                except OSError:
                    pass

    # --- panel -----------------------------------------------------------------------------------

    def set_input(self, pin: str, value: int) -> None:
        assert self._sock is not None
        if pin == "valve_pos":  # a person moved the valve (pulled a latching valve's knob)
            self.valve_open = value == self._pos_level(True)
        self._sock.sendall(b"%s %d\n" % (pin.encode(), value))

    def inject_fault(self, kind: str) -> None:
        """'crash' raises inside the firmware, 'hang' makes its loop stop returning, 'slow'
        makes every cycle overrun."""
        assert self._sock is not None
        self._sock.sendall(b"fault %s\n" % kind.encode())

    def press(self, button: str, hold_s: float = 0.15) -> None:
        active = 1 if _field(self.config, "pins", "buttons_active_low") is False else 0
        self.set_input(button, active)
        time.sleep(hold_s)
        self.set_input(button, 1 - active)

    def reset_until_open(
        self, attempts: int = 5, hold_s: float | None = None, wait_s: float = 1.5,
        pause_s: float = 0.3,
    ) -> None:  # fmt: skip
        """Staff hold RESET until the valve opens. Right after a boot a detector may not have
        answered yet: the board refuses (and says so), and the person tries again a moment
        later. Neither opening nor refusing is an error at once; so is refusing every time."""
        if hold_s is None:
            hold_ms = _field(self.config, "pins", "reset_hold_ms", default=1000)
            hold_s = (hold_ms if isinstance(hold_ms, int) else 1000) / 1000 + 0.2
        for _ in range(attempts):
            mark = len(self.lines)
            self.press("reset", hold_s)
            try:
                self.wait_output("valve", 1, wait_s)
                return
            except TimeoutError:
                self.wait_line("reset.refused", 1.0, start=mark)
                time.sleep(pause_s)
        raise TimeoutError(
            "reset refused %d times; last lines:\n%s" % (attempts, "\n".join(self.lines[-10:]))
        )

    def wait_output(self, pin: str, value: int, timeout: float = 5.0) -> float:
        """Wait until output `pin` reads `value`; returns the perf_counter time it changed."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.outputs.get(pin) != value:
                left = deadline - time.monotonic()
                if self.boot_crash is not None:
                    raise BootCrash(self.boot_crash)
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
