"""`gasguard flash --port PORT --config FILE`: put the firmware, the device config and its key on
a board running MicroPython, over its USB serial REPL (ESP32) or a virtual board's REPL pty.

Steps: check the config exactly as `gasguard config check` does (schema, the firmware's own
validator, the install rules) and refuse it on any error; compile the firmware with mpy-cross;
connect with mpremote's serial transport without a soft reset (the running firmware is
interrupted with Ctrl-C, which leaves the valve closed); refuse a board whose MicroPython cannot
load our bytecode. Then a transaction (docs/firmware.md, "Installs"): the whole install (lib/,
config.json without the install block and the key, key.hex, board.json) is staged in the board's
other install directory, gg/a or gg/b; a file already there or in the running install is not
sent again (the running install's copy is copied on the board); every digest is read back, and
only then one rename of gg/current switches the board to it, naming the running install as the
fallback. A cut at any moment leaves the old install or the new one, never a mix. Last, the
board restarts and flash watches its console until the firmware says it runs (or shows the
board's own error: exit 1).

After the switch, the board's own error (FATAL, BOOT FAILED, CONFIG ERROR) makes flash name the
previous install in gg/current again and restart the board into it; a detector fault in the
first seconds fails the flash but leaves the new install (the wiring, not the config). The
probe stops the firmware (Ctrl-C): whatever ends flash (done, --dry-run, a failure, Ctrl-C)
restarts the board, or says the firmware is stopped when the board cannot be reached. Nothing
mpremote prints reaches stdout.

Exit codes: 0 flashed and running; 1 the board refused or failed to boot it (switched back), a
detector fault, a full filesystem; 2 bad input (the config, a --key other than key_hex,
--override without --installer); 3 the board went away (the port vanished), never answered or
does not stay in its REPL; 130 interrupted (Ctrl-C), the board restarted.

`--override REASON` flashes a config whose only errors are install-rule findings (placement,
service life, backup power, ...) and writes who overrode what and why to override.json in the
install, where `gasguard commission` reads it into the commissioning record. What the board
itself would refuse at boot, and an ESP32 pin that cannot work, can never be overridden.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gasguard.tools.image import install_firmware, manifest
from gasguard.tools.installer import configcheck
from gasguard.tools.installer import port as ports

OVERRIDE_FILE = "override.json"  # in the install, beside config.json
PINMAP_FILE = "board.json"  # the safe core's pin map (firmware/lib/gasguard/safe.py)
POINTER = "gg/current"  # the install to run, and the previous one (firmware/main.py)
ROOT_INSTALL = "."  # a board laid out by the bench: the install is the root itself
# what a board held at its root before installs had directories of their own
LEGACY = ("lib", "config.json", "key.hex", PINMAP_FILE, OVERRIDE_FILE)
BOOT_TIMEOUT_S = 40.0  # from the restart to the firmware's running line (ESP32: about 5 s)
SETTLE_S = 2.0  # after the running line: a fault in the first cycles still counts (100 cycles)
HEALTHY = "GASGUARD RUNNING"
# the firmware's own lines for a boot that did not reach a running loop
FAILED = ("BOOT FAILED", "FATAL", "CONFIG ERROR", "VALVE FAULT", "Traceback")
STOPPED = (
    "the firmware is stopped (no gas detection; the valve closed): reset or power-cycle the board"
)
# A cable pulled, by what flash was doing (L1 of the issue 22 attack): each says what is on the
# board and that its firmware may be stopped (a board powered from elsewhere stays at its REPL)
LOST_BEFORE = (
    "the board went away during the copy; the old firmware is still in place — reconnect, "
    "reset or power-cycle the board (flash stopped its firmware) and run the same command again"
)
LOST_READING = (
    "the board went away while flash read what it holds (nothing was changed on it) — "
    "reconnect, reset or power-cycle the board (flash stopped its firmware) and run the same "
    "command again"
)
LOST_DRY = (
    "the board went away during the dry run (nothing was changed on it) — reconnect, and reset "
    "or power-cycle the board: flash stopped its firmware"
)
LOST_SWITCHING = (
    "the board went away as the new firmware was being switched in; it boots the old one or the "
    "new one, never a mix — reconnect, reset or power-cycle the board and run the same command "
    "again"
)
LOST_AFTER = (
    "the board went away after the new firmware was switched in (it boots with it) — "
    "reconnect, reset or power-cycle the board and run the same command again to see it come up"
)
LOST_WATCHING = (
    "the board went away while flash watched it start (it had been restarted%s) — reconnect "
    "and run the same command again to see it come up"
)
INTERRUPTED = 130  # Ctrl-C: the shell's code for SIGINT
MIN_VERSION = (1, 23)  # the first release reading bytecode v6.3, what our mpy-cross emits
MPY_VERSION = (6, 3)
PLATFORMS = {"esp32": "ESP32", "linux": "virtual board (unix port)"}
CHUNK = 512


class FlashError(Exception):
    """What went wrong, in words an installer can act on; exit code 1 (board), 2 (input) or 3
    (the board unreachable)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class BootRefused(FlashError):
    """The firmware's own failure lines after a restart: `said`, the board's words."""

    def __init__(self, message: str, said: list[str]) -> None:
        super().__init__(message, 1)
        self.said = said


class DetectorFaults(FlashError):
    """The firmware runs, but detectors report a fault in the first seconds."""


class Interrupted(FlashError):
    """Ctrl-C at the installer's terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(message, INTERRUPTED)


class _Quiet:
    """mpremote's transport with its print()s kept off stdout (issue 22 attack H3: a board that
    fails raw REPL had its banner and bytes printed before flash's --json): what it would have
    printed is kept in `said`, for the words of an error."""

    def __init__(self, t: Any) -> None:
        self._t = t
        self.said = io.StringIO()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._t, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            real = sys.stdout  # a caller's callback (commission's echo) prints as it would

            def outside(f: Callable[..., Any]) -> Callable[..., Any]:
                def run(*a: Any, **k: Any) -> Any:
                    with contextlib.redirect_stdout(real):
                        return f(*a, **k)

                return run

            kw = {k: outside(v) if callable(v) else v for k, v in kw.items()}
            with contextlib.redirect_stdout(self.said):
                return attr(*args, **kw)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_t", "said"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._t, name, value)


def read_key(cfg: Any, key_path: Path | None) -> bytes:
    """The device key: the --key file, else the config's key_hex; both given, they must be the
    same key (the gateway's keys file pairs the device with the config's: another key on the
    board has every frame it sends rejected)."""
    cfg_text = cfg.get("key_hex", "") if isinstance(cfg, dict) else ""
    if key_path is not None:
        try:
            text = Path(key_path).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise FlashError("%s: cannot read the key (%s)" % (key_path, e), 2) from None
    else:
        text = cfg_text
    try:
        key = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise FlashError("key: not hexadecimal", 2) from None
    if len(key) < 16:
        raise FlashError("key: missing or shorter than 16 bytes (use --key or key_hex)", 2)
    if key_path is not None and isinstance(cfg_text, str) and cfg_text.strip():
        try:
            same = bytes.fromhex(cfg_text) == key
        except ValueError:
            same = False
        if not same:
            raise FlashError(
                "%s is not the key in the config's key_hex: the gateway's keys file has the "
                "config's key for this device and would reject every frame signed with another; "
                "give the same key in both, or leave out --key" % key_path,
                2,
            )
    return key


def refused(path: Path, errors: list[configcheck.Finding], override: bool) -> FlashError:
    lines = ["%s: %d error(s); the board is not flashed:" % (path, len(errors))]
    lines += ["  " + str(f) for f in errors]
    hard = [f for f in errors if not f.overridable]
    if hard:
        lines.append(
            "%d of them the board itself would refuse (or the ESP32 cannot do): fix the config"
            % len(hard)
        )
    elif not override:
        lines.append(
            "only install rules: to flash anyway, give --override REASON (and --installer NAME); "
            "the override goes into the commissioning record"
        )
    return FlashError("\n".join(lines), 2)


def build_image(
    config_path: Path,
    key_path: Path | None,
    staging: Path,
    override: dict[str, Any] | None = None,
    today: datetime.date | None = None,
    checked: Callable[[], None] | None = None,
) -> dict[str, bytes]:
    """Every file the board should hold, by its path on the board's filesystem. Refuses (exit
    code 2) exactly what `gasguard config check` refuses, unless override (by, reason) is given
    and every error is an overridable install-rule finding; then override.json records them.
    checked() runs once the config and key are accepted, before the (slower) compile."""
    try:
        _, cfg, found = configcheck.check_file(config_path, today)
    except configcheck.ConfigFileError as e:
        raise FlashError("%s: %s" % (config_path, e), 2) from None
    errors = [f for f in found if f.level == "error"]
    if errors and (override is None or not all(f.overridable for f in errors)):
        raise refused(config_path, errors, override is not None)
    key = read_key(cfg, key_path)
    if checked is not None:
        checked()
    try:
        install_firmware(staging)
    except (RuntimeError, OSError) as e:
        raise FlashError("cannot compile the firmware: %s" % e, 2) from None
    files = {}
    for p in sorted(staging.rglob("*")):
        if p.is_file():
            files[p.relative_to(staging).as_posix()] = p.read_bytes()
    device_cfg = {k: v for k, v in cfg.items() if k not in ("key_hex", "install")}
    files["config.json"] = json.dumps(device_cfg, indent=1).encode()
    files["key.hex"] = key.hex().encode()
    files[PINMAP_FILE] = pinmap(device_cfg, key)
    if errors:
        assert override is not None
        files[OVERRIDE_FILE] = json.dumps(
            {
                "record": "gasguard install-rule override",
                "by": override["by"],
                "reason": override["reason"],
                "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                # the firmware's digest of the config it was made for: commissioning tells a
                # stale override (the config changed since) from a current one
                "config_digest": hashlib.sha256(files["config.json"]).hexdigest()[:16],
                "source": str(config_path),
                "overridden": [f.as_dict() for f in errors],
            },
            indent=1,
        ).encode()
    return files


def pinmap(device_cfg: dict, key: bytes) -> bytes:
    """board.json for a config the firmware accepts: what the firmware itself writes from it."""
    from gasguard.tools.device import load_firmware_module

    cfg = load_firmware_module("config").Config(device_cfg, key=key)
    return json.dumps(load_firmware_module("safe").pinmap(cfg)).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Defined on the board once: prints "digest path" per file ("-" if missing). The running
# firmware's objects stay on the heap after Ctrl-C, so the work is done in small batches.
_HASHER = """
import gc, hashlib, binascii
def _gg_hash(paths):
    b = bytearray(256)
    for p in paths:
        try:
            f = open(p, 'rb')
        except OSError:
            print('-', p)
            continue
        h = hashlib.sha256()
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(b if n == 256 else b[:n])
        f.close()
        print(binascii.hexlify(h.digest()).decode(), p)
    gc.collect()
gc.collect()
"""
HASH_BATCH = 6

# Defined on the board once, beside _gg_hash: copy a file on the board, remove a file or a tree,
# list the files under a directory, and switch gg/current by one rename (atomic on LittleFS).
_TXN = """
import os
def _gg_copy(a, b):
    buf = bytearray(256)
    mv = memoryview(buf)
    s = open(a, 'rb')
    d = open(b, 'wb')
    while True:
        n = s.readinto(buf)
        if not n:
            break
        d.write(mv[:n])
    s.close()
    d.close()
def _gg_rm(p):
    try:
        m = os.stat(p)[0]
    except OSError:
        return
    if m & 0x4000:
        for e in list(os.ilistdir(p)):
            _gg_rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
def _gg_walk(p):
    try:
        es = list(os.ilistdir(p))
    except OSError:
        return
    for e in es:
        if e[1] & 0x4000:
            _gg_walk(p + '/' + e[0])
        else:
            print(p + '/' + e[0])
def _gg_point(text):
    try:
        os.mkdir('gg')
    except OSError:
        pass
    f = open('gg/current.new', 'w')
    f.write(text)
    f.close()
    os.rename('gg/current.new', 'gg/current')
def _gg_fix(ds, fs):
    for d in ds:
        try:
            if not os.stat(d)[0] & 0x4000:
                os.remove(d)
                print(d)
        except OSError:
            pass
    for p in fs:
        try:
            if os.stat(p)[0] & 0x4000:
                _gg_rm(p)
                print(p)
        except OSError:
            pass
"""
COPY_BATCH = 4

# What the board boots, as firmware/main.py picks it from gg/current: the install first, then
# its fallback, only installs that exist (a lib/ in them). Self-contained: commission uses it.
_NAMES = """
import os
def _gg_lib(n):
    try:
        os.stat(('' if n == b'.' else 'gg/' + n.decode() + '/') + 'lib')
        return 1
    except OSError:
        return 0
def _gg_names():
    try:
        f = open('gg/current', 'rb')
        try:
            t = f.read(16).split()
        finally:
            f.close()
        c = t + [b'a', b'b', b'.']
    except OSError:
        t = []
        c = [b'.', b'a', b'b']
    r = []
    for x in c:
        if x in (b'a', b'b', b'.') and _gg_lib(x):
            r.append(x)
            break
    if r and len(t) > 1 and t[1] in (b'a', b'b', b'.') and t[1] != r[0] and _gg_lib(t[1]):
        r.append(t[1])
    print(b' '.join(r).decode())
"""


def soft_reset(ser: Any) -> None:
    """Stop what runs (Ctrl-C), leave a raw REPL (Ctrl-B) and soft-reset from the friendly one
    (Ctrl-D): the firmware starts again, on the ESP32 and the virtual board alike."""
    ser.write(b"\r\x03\x03")
    time.sleep(0.1)
    ser.write(b"\x02")
    time.sleep(0.05)
    ser.write(b"\x04")
    ser.flush()


class Board:
    """The board's REPL through mpremote's serial transport."""

    def __init__(self, port: str) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                t = SerialTransport(port, baudrate=115200, exclusive=True, timeout=1)
        except TransportError:  # mpremote's "failed to access": the probe had it a moment ago
            if os.path.exists(port):
                raise FlashError(
                    "%s is in use by another program (a serial monitor, mpremote, another "
                    "gasguard flash): close it and try again; %s" % (port, STOPPED),
                    3,
                ) from None
            raise FlashError("%s went away (the cable pulled?) — reconnect; %s"
                             % (port, STOPPED), 3) from None  # fmt: skip
        self.t = _Quiet(t)
        try:
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=5)
        except (TransportError, OSError) as e:
            self.kick()
            try:
                self.t.close()
            except Exception:  # noqa: BLE001 - gone already
                pass
            if port_lost(e) and not isinstance(e, TransportError):
                raise FlashError("%s went away (the cable pulled?) — reconnect; %s"
                                 % (port, STOPPED), 3) from None  # fmt: skip
            raise FlashError(
                "the board on %s answers but does not stay in the REPL: it may be restarting in "
                "a loop — power-cycle it and run the same command again; if it keeps restarting, "
                "reinstall MicroPython with esptool (README)" % port,
                3,
            ) from None

    def kick(self) -> bool:
        """Restart a board whose state flash does not know (a command cut short, Ctrl-C): stop
        what runs, leave the raw REPL and soft-reset from the friendly one, which restarts the
        firmware on the ESP32 and the virtual board alike. False if the port is gone."""
        try:
            soft_reset(self.t.serial)
            return True
        except Exception:  # noqa: BLE001 - pyserial's errors on a pulled cable vary
            return False

    def eval_json(self, code: str) -> Any:
        out = self.t.exec(code)
        return json.loads(out.decode().strip().splitlines()[-1])

    def identify(self) -> dict[str, Any]:
        # a list, not a dict: short strings in code sent to the board are interned there for
        # good, and a stopped board has little heap for a new pool of names (commission)
        plat, version, mpy, machine = self.eval_json(
            "import sys, json\n"
            "print(json.dumps([sys.platform, list(sys.implementation.version[:3]), "
            "getattr(sys.implementation, '_mpy', 0), getattr(sys.implementation, '_machine', "
            "'')]))"
        )
        return {"platform": plat, "version": version, "mpy": mpy, "machine": machine}

    def install_file(self, name: str) -> str:
        """The path of `name` in the install the board runs (gg/current names it)."""
        names = self.installs()
        return install_dir(names[0] if names else ROOT_INSTALL) + name

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        self.t.exec(_HASHER)
        out: dict[str, str | None] = {}
        for i in range(0, len(paths), HASH_BATCH):
            text = self.t.exec("_gg_hash(%r)" % (paths[i : i + HASH_BATCH],)).decode()
            for line in text.splitlines():
                digest, _, path = line.strip().partition(" ")
                if path:
                    out[path] = None if digest == "-" else digest
        return out

    def load_helpers(self) -> None:
        self.t.exec(_HASHER)
        self.t.exec(_TXN)

    def installs(self) -> list[str]:
        """The install the board boots, then its fallback, as firmware/main.py reads gg/current:
        only installs that exist (gg/a, gg/b or the root with a lib/), whatever the pointer
        holds; none: an empty list (the board has no install to fall back to)."""
        return self.t.exec(_NAMES + "_gg_names()\n").decode().split()

    def fix_layout(self, dirs: list[str], files: list[str]) -> list[str]:
        """Remove a file where a directory must be, and a directory where a file must be (a
        board laid out by hand, or damaged): what was removed."""
        text = self.t.exec("_gg_fix(%r, %r)" % (dirs, files)).decode()
        return [line.strip() for line in text.splitlines() if line.strip()]

    def walk(self, top: str) -> list[str]:
        text = self.t.exec("_gg_walk(%r)" % top).decode()
        return [line.strip() for line in text.splitlines() if line.strip()]

    def copy_on_board(self, pairs: list[tuple[str, str]]) -> None:
        for i in range(0, len(pairs), COPY_BATCH):
            self.t.exec(
                "for a, b in %r:\n    _gg_copy(a, b)\ngc.collect()" % (pairs[i : i + COPY_BATCH],)
            )

    def remove_all(self, paths: list[str]) -> None:
        if paths:
            self.t.exec("for p in %r:\n    _gg_rm(p)\n" % (paths,))

    def rename(self, pairs: list[tuple[str, str]]) -> None:
        if pairs:
            self.t.exec("for a, b in %r:\n    os.rename(a, b)\n" % (pairs,))

    def point(self, names: list[str]) -> None:
        """Write gg/current: the one rename that switches installs."""
        self.t.exec("_gg_point(%r)" % " ".join(names))

    def makedirs(self, dirs: list[str]) -> None:
        self.t.exec(
            "import os\n"
            "for d in %r:\n"
            "    try:\n"
            "        os.mkdir(d)\n"
            "    except OSError:\n"
            "        pass\n" % (dirs,)
        )

    def remove(self, path: str) -> None:
        self.t.exec("import os\ntry:\n    os.remove(%r)\nexcept OSError:\n    pass\n" % path)

    def write(self, path: str, data: bytes, progress) -> None:
        self.t.exec("gc.collect()")
        try:
            self.t.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=progress)
        except OSError as e:
            if e.errno is not None and e.errno not in (errno.EIO, errno.ENXIO, errno.ENODEV):
                # the board's error (a full filesystem): the file it was writing is closed
                self.t.exec("try:\n f.close()\nexcept Exception:\n pass\n")
            raise

    def point_back(self, names: list[str], tries: int = 8) -> None:
        """gg/current := names on a board whose firmware fails as it starts (in a watchdog
        loop): Ctrl-C until a raw REPL answers between two resets, then one self-contained
        command, read back."""
        from mpremote.transport import TransportError

        want = " ".join(names)
        code = (
            "import os\nf=open('gg/current.new','w')\nf.write(%r)\nf.close()\n"
            "os.rename('gg/current.new','gg/current')\nprint(open('gg/current').read())" % want
        )
        for _ in range(tries):
            try:
                self.t.enter_raw_repl(soft_reset=False, timeout_overall=3)
                if self.t.exec(code).decode().strip() == want:
                    return
            except TransportError:
                time.sleep(0.3)
        raise FlashError("the board did not stay in the REPL long enough to switch back", 1)

    def restart(self, platform: str, keep_open: bool = False) -> None:
        """Restart the board into its firmware; keep_open: the port stays open for
        watch_boot."""
        if platform == "esp32":
            try:  # the board resets at once and never answers
                self.t.exec_raw_no_follow("import machine\nmachine.reset()")
            except Exception:  # noqa: BLE001 - whatever the dropped line raises
                pass
        else:  # unix port: leave raw REPL, Ctrl-D ends the REPL; the virtual board reboots
            self.t.exit_raw_repl()
            self.t.serial.write(b"\x04")
        if not keep_open:
            self.t.close()

    def watch_boot(
        self,
        timeout: float,
        on_line: Callable[[str], None] = lambda line: None,
        cfg: dict[str, Any] | None = None,
        settle: float = SETTLE_S,
        what: str = "the new firmware",
    ) -> str:
        """The console after a restart, line by line, until the firmware's running line has
        stood for `settle` s (returned), or one of its failure lines comes (BootRefused with the
        lines that follow it, the board's own words), or the timeout (FlashError). cfg: the
        device config, whose detectors must not report a fault by then (DetectorFaults); lines
        are passed to on_line as people read them (human_line)."""
        ser = self.t.serial
        deadline = time.monotonic() + timeout
        partial = b""
        running = ""
        failed: list[str] = []
        until = 0.0
        seen: list[str] = []
        faulty: dict[int, str] = {}  # detector index -> what the board said
        while True:
            now = time.monotonic()
            if failed and now >= until:  # first: a fault after the running line counts
                # the board's words: its error lines, not the frames of its traceback
                frames = ("Traceback (most recent", 'File "')
                said = [human_line(x, cfg) for x in failed if not x.startswith(frames)][:8]
                raise BootRefused(
                    "%s did not come up cleanly; the board says:\n  %s\nits valve stays "
                    "closed" % (what, "\n  ".join(said)),
                    said,
                )
            if running and now >= until:
                if faulty and cfg is not None:
                    raise DetectorFaults(
                        "the firmware runs, but %s:\n  %s\ncheck their wiring, power and "
                        "Modbus addresses; the new install stays on the board (it is right if "
                        "the detectors are); the valve stays closed until they answer and staff "
                        "reset it on site"
                        % (
                            "a detector reports a fault"
                            if len(faulty) == 1
                            else "%d detectors report a fault" % len(faulty),
                            "\n  ".join(faulty[i] for i in sorted(faulty)),
                        )  # fmt: skip
                    )
                return running
            if now >= deadline:
                raise FlashError(
                    "the board did not say it runs within %.0f s of the restart (no %r line); "
                    "its last lines:\n  %s\nlook at its console: mpremote connect %s"
                    % (timeout, HEALTHY, "\n  ".join(human_line(x, cfg) for x in seen[-8:])
                       or "(nothing)", self.port)
                )  # fmt: skip
            ser.timeout = 0.2
            partial += ser.read(max(1, min(ser.in_waiting, 4096)))
            *done, partial = partial.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace").strip("\r\n\x04> ")
                if not line:
                    continue
                seen.append(line)
                on_line(human_line(line, cfg))
                if failed:
                    failed.append(line)
                elif line.startswith(FAILED):
                    failed = [line]
                    until = time.monotonic() + 1.0  # the traceback that follows
                elif line.startswith(HEALTHY) and not running:
                    running = line
                    until = time.monotonic() + settle
                else:
                    ev = parse_event(line)
                    if ev and ev["det"] is not None and ev["kind"] == "detector.fault":
                        faulty[ev["det"]] = "%s: %s" % (
                            detector_name(ev["det"], cfg),
                            ev["detail"] or "fault",
                        )
                    elif ev and ev["det"] is not None and ev["kind"] == "detector.restored":
                        faulty.pop(ev["det"], None)

    def close(self) -> None:
        try:
            try:
                self.t.exit_raw_repl()
            finally:
                self.t.close()
        except Exception:  # noqa: BLE001 - a port that went away cannot be closed cleanly
            pass


def parse_event(line: str) -> dict[str, Any] | None:
    """The firmware's console line for an event (firmware/lib/gasguard/app.py):
    "EVENT boot seq kind det=N lel=X detail", det counted from 0 or None."""
    parts = line.split(" ", 6)
    if len(parts) < 6 or parts[0] != "EVENT" or not parts[4].startswith("det="):
        return None
    det = parts[4][4:]
    lel = parts[5][4:] if parts[5].startswith("lel=") else "None"
    return {
        "kind": parts[3],
        "det": int(det) if det.isdigit() else None,
        "lel": None if lel == "None" else lel,
        "detail": parts[6].strip() if len(parts) > 6 else "",
    }


def detector_name(index: int, cfg: dict[str, Any] | None) -> str:
    """detector N (Modbus address A), as every command names them (tools/human.py)."""
    from gasguard.tools import human

    dets = (cfg or {}).get("detectors") or []
    addr = (
        dets[index].get("address") if index < len(dets) and isinstance(dets[index], dict) else None
    )
    return human.detector(index, addr)


def human_line(line: str, cfg: dict[str, Any] | None) -> str:
    """A console line as people read it: an EVENT line in words (no det=None, no detectors
    counted from 0), anything else as the board said it."""
    ev = parse_event(line)
    if ev is None:
        return line
    words = ev["kind"].replace(".", " ")
    if ev["det"] is not None:
        words += ", " + detector_name(ev["det"], cfg)
    if ev["lel"] is not None:
        words += ", %s %% LEL" % ev["lel"]
    return "event: %s%s" % (words, ": " + ev["detail"] if ev["detail"] else "")


def check_supported(info: dict[str, Any]) -> None:
    plat = info.get("platform")
    version = tuple(info.get("version") or ())
    mpy = info.get("mpy", 0)
    mpy_v = (mpy & 0xFF, (mpy >> 8) & 3)
    if plat not in PLATFORMS:
        raise FlashError(
            "the board runs MicroPython on %r; GasGuard runs on ESP32 (or a virtual board)" % plat
        )
    if version[:2] < MIN_VERSION or mpy_v != MPY_VERSION:
        raise FlashError(
            "the board runs MicroPython %s (bytecode v%d.%d); GasGuard needs %d.%d or later "
            "(bytecode v%d.%d): update MicroPython with esptool (README)"
            % (".".join(str(x) for x in version), mpy_v[0], mpy_v[1], *MIN_VERSION, *MPY_VERSION)
        )


def install_dir(name: str) -> str:
    """Where an install's files are on the board (relative to its root, as the REPL sees it)."""
    return "" if name == ROOT_INSTALL else "gg/%s/" % name


def root_files() -> set[str]:
    """The image's files at the board's root, outside any install: what MicroPython runs first
    (main.py picks the install), kept able to boot the previous install too."""
    m = manifest()
    return set(m["ROOT_SOURCE"]) | {Path(n).stem + ".mpy" for n in m["ROOT_BYTECODE"]}


def _dirs(paths: list[str]) -> list[str]:
    """Every directory the paths need, parents first."""
    out = set()
    for p in paths:
        parts = p.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(out, key=lambda d: (d.count("/"), d))


class Progress:
    """rich's progress bar on stderr, only on a terminal: bytes sent over the wire, by file."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, TextColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                           console=Console(stderr=True), transient=True)  # fmt: skip
            self.task = self.bar.add_task("copying", total=total)
            self.bar.start()
        self.done = 0

    def file(self, name: str, size: int) -> Callable[[int, int], None]:
        """The callback for one file's chunks."""
        if self.bar is not None:
            self.bar.update(self.task, description=name)
        base = self.done
        self.done += size
        return lambda n, _total: self.bar and self.bar.update(self.task, completed=base + n)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def kick_port(port: str) -> bool:
    """Restart a board flash stopped (the probe's Ctrl-C) before it opened it with mpremote."""
    import serial

    try:
        with serial.Serial(port, 115200, timeout=0.2, exclusive=True) as ser:
            soft_reset(ser)
        return True
    except Exception:  # noqa: BLE001 - gone, or held by another program
        return False


def flash(
    port: str,
    config: Path,
    key: Path | None = None,
    dry_run: bool = False,
    progress: bool | None = None,
    out: Callable[[str], None] = print,
    override: dict[str, Any] | None = None,
    boot_timeout: float = BOOT_TIMEOUT_S,
) -> dict[str, Any]:
    """Returns a report: board, install, copied (sent over the wire), seeded (copied on the
    board), skipped, verified, restarted, running (the firmware's line), and overridden. The
    probe stops the board's firmware (Ctrl-C): from then on every way out, a failure and Ctrl-C
    included, restarts it, or says it is stopped when the board cannot be reached."""
    probed = []

    def probe() -> None:
        # what answers on the port (the link UART, silence, a busy port) in words, within a
        # second and with no bytes from it on the terminal, once the config is accepted and
        # before the compile; mpremote would say "failed to access" or, after seconds, "no REPL"
        found = ports.identify(port)
        if found.kind != ports.REPL:
            raise FlashError(found.message, found.code)
        probed.append(True)

    try:
        with tempfile.TemporaryDirectory(prefix="gasguard-flash-") as tmp:
            files = build_image(config, key, Path(tmp), override, checked=probe)
        out("image: %d files, %.0f kB (firmware compiled with mpy-cross)" % (
            len(files), sum(len(b) for b in files.values()) / 1024))  # fmt: skip
        board = Board(port)
    except KeyboardInterrupt:
        if probed and not kick_port(port):
            raise Interrupted(
                "interrupted: nothing was changed on the board; " + STOPPED
            ) from None
        raise Interrupted("interrupted: nothing was changed on the board%s"
                          % ("; it was restarted" if probed else "")) from None  # fmt: skip
    except FlashError as e:
        if probed and e.code == 2 and not kick_port(port):  # the compile: the board was stopped
            raise FlashError("%s; %s" % (e, STOPPED), e.code) from None
        raise
    overridden = json.loads(files[OVERRIDE_FILE])["overridden"] if OVERRIDE_FILE in files else []
    for f in overridden:
        out("OVERRIDDEN by %s (%s): %s: %s [%s]" % (
            override and override["by"], override and override["reason"], f["field"],
            f["message"], f["rule"]))  # fmt: skip
    from mpremote.transport import TransportError, TransportExecError

    state: dict[str, Any] = {"phase": "reading", "switched": False, "restarted": False,
                             "platform": None, "staged": []}  # fmt: skip
    lost = False
    try:
        try:
            return _flash_board(board, port, files, overridden, dry_run, progress, out,
                                boot_timeout, state)  # fmt: skip
        except KeyboardInterrupt:
            err: FlashError = Interrupted("interrupted (Ctrl-C) %s" % _where(state))
        except FlashError as e:
            err = e
        except TransportExecError as e:  # the board answered: a step raised there
            err = refused_step(_last_line(e), state, port)
        except (OSError, TransportError) as e:
            if not port_lost(e):  # mpremote turns a board's file error into an OSError
                err = refused_step(str(e), state, port)
            else:
                lost = True
                err = FlashError(_lost(state), 3)
        if not lost:
            err = _recover(board, state, err)
        raise err from None
    finally:
        try:
            board.t.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


def _where(state: dict[str, Any]) -> str:
    if state["switched"]:
        return "after the new firmware was switched in (the board boots with it)"
    if state["phase"] == "switching":
        return "as the new firmware was being switched in (the board boots the old or the new)"
    if state["phase"] in ("copy",):
        return "during the copy: the old firmware is still in place"
    return "before anything was changed on the board"


def _lost(state: dict[str, Any]) -> str:
    phase = state["phase"]
    if phase == "watching":
        return LOST_WATCHING % ("; the new firmware switched in" if state["switched"]
                                else "; nothing was changed on it")  # fmt: skip
    if state["switched"]:
        return LOST_AFTER
    return {"reading": LOST_READING, "dry-run": LOST_DRY, "switching": LOST_SWITCHING}.get(
        phase, LOST_BEFORE
    )


def _recover(board: Board, state: dict[str, Any], err: FlashError) -> FlashError:
    """After a failure or Ctrl-C with the port still there: remove what was staged on a full
    filesystem, then restart the board unless it was; the message says how the board was left."""
    text = str(err)
    if state.get("full") and state["staged"]:
        try:
            board.remove_all(state["staged"])
            text += "\nwhat flash had staged is removed again"
        except Exception:  # noqa: BLE001 - the board went away meanwhile
            pass
    if state["restarted"]:
        if isinstance(err, Interrupted):
            text += "; the board had been restarted and comes up by itself"
        return type(err)(text) if isinstance(err, Interrupted) else _with(err, text)
    ok = False
    try:
        if isinstance(err, Interrupted) or state["platform"] is None:
            ok = board.kick()  # a command may be half sent: the REPL's state is not known
        else:
            board.restart(state["platform"], keep_open=True)
            ok = True
    except Exception:  # noqa: BLE001 - whatever a dropped line raises: the plain way, once
        ok = board.kick()
    text += ("\nthe board was restarted: its firmware runs again, the valve closed until staff "
             "reset it on site" if ok else "\n" + STOPPED)  # fmt: skip
    return type(err)(text) if isinstance(err, Interrupted) else _with(err, text)


def _with(err: FlashError, text: str) -> FlashError:
    return FlashError(text, err.code)


ERRNO_WORDS = {
    errno.ENOSPC: "the board's filesystem is full",
    errno.EISDIR: "a directory stands where a file must be",
    errno.ENOTDIR: "a file stands where a directory must be",
    errno.EEXIST: "something already stands where flash writes",
    errno.ENOENT: "a file or directory flash needs is missing",
    errno.EACCES: "the board's filesystem refuses writing",
    errno.EPERM: "the board's filesystem refuses writing",
    errno.EROFS: "the board's filesystem is read-only",
    errno.EIO: "the board's flash memory failed to read or write",
    errno.ENOMEM: "the board ran out of memory",
}


def board_errno(why: str) -> int | None:
    """The errno in a board's error line: OSError: [Errno 28] ENOSPC, OSError: 28, ENOSPC."""
    import re

    m = re.search(r"\[Errno (\d+)\]|OSError: (\d+)|\b(E[A-Z]{2,})\b", why)
    if not m:
        return None
    if m.group(3):
        return getattr(errno, m.group(3), None)
    return int(m.group(1) or m.group(2))


def refused_step(why: str, state: dict[str, Any], port: str) -> FlashError:
    code = board_errno(why)
    where = ("the new firmware is switched in" if state["switched"]
             else "the old firmware is still in place")  # fmt: skip
    if code == errno.ENOSPC:
        state["full"] = True
        return FlashError(
            "the board's filesystem is full: the new install does not fit beside the running "
            "one (a flash keeps both, to fall back on); %s. Make room on the board (files that "
            "are not GasGuard's: mpremote connect %s fs ls -r) or use a board with a larger "
            "filesystem partition" % (where, port)
        )
    words = ERRNO_WORDS.get(code) if code is not None else None
    return FlashError(
        "the board refused a step (%s); %s: run the same command again; if the board refuses "
        "again, look at its files (mpremote connect %s fs ls -r) and the board's console"
        % ("%s: %s" % (words, why) if words else why, where, port)
    )


def port_lost(e: Exception) -> bool:
    """A port that went away (a pulled cable, a board reset from elsewhere): pyserial's errors,
    mpremote's own for a line that stopped answering, or the errno of a vanished device."""
    import serial
    from mpremote.transport import TransportError, TransportExecError

    if isinstance(e, TransportExecError):
        return False
    if isinstance(e, (serial.SerialException, TransportError)):
        return True
    return isinstance(e, OSError) and e.errno in (errno.EIO, errno.ENXIO, errno.ENODEV, None)


def _last_line(e: Exception) -> str:
    """The board's own error line from mpremote's TransportExecError."""
    text = e.args[-1] if e.args else b""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = str(text).strip().splitlines()
    return lines[-1] if lines else str(e)


def _settle(cfg: dict[str, Any]) -> float:
    """How long after the running line flash watches: a detector that does not answer is a
    fault after the bus's stale_ms (firmware/lib/gasguard/detectors.py), and a little more."""
    bus = cfg.get("bus") if isinstance(cfg.get("bus"), dict) else {}
    stale = bus.get("stale_ms", 2000)
    stale = stale if isinstance(stale, int) and 0 <= stale <= 10000 else 2000
    return max(SETTLE_S, stale / 1000 + 1.5)


def _plural(n: int, one: str, many: str) -> str:
    return "%d %s" % (n, one if n == 1 else many)


def _flash_board(
    board: Board,
    port: str,
    files: dict[str, bytes],
    overridden: list,
    dry_run: bool,
    progress: bool | None,
    out: Callable[[str], None],
    boot_timeout: float,
    state: dict[str, Any],
) -> dict[str, Any]:
    cfg = json.loads(files["config.json"])
    if dry_run:
        state["phase"] = "dry-run"
    info = board.identify()
    check_supported(info)
    state["platform"] = info["platform"]
    out("board: MicroPython %s on %s (%s)" % (
        ".".join(str(x) for x in info["version"]), PLATFORMS[info["platform"]],
        info.get("machine", "")))  # fmt: skip
    board.load_helpers()
    want = {p: _sha(d) for p, d in files.items()}
    at_root = sorted(root_files() & set(files))
    inst = sorted(set(files) - set(at_root))
    installs = board.installs()  # only installs that exist, as main.py picks them
    cur = installs[0] if installs else ROOT_INSTALL
    new = "b" if cur == "a" else "a"
    cur_d, new_d = install_dir(cur), install_dir(new)
    extra = [] if OVERRIDE_FILE in files else [cur_d + OVERRIDE_FILE]
    paths = at_root + [new_d + p for p in inst] + [cur_d + p for p in inst] + extra
    on_board = board.hashes(paths)
    # an override made for an earlier config must not reach this one's record
    stale = bool(extra) and on_board.get(extra[0]) is not None
    current = all(on_board.get(cur_d + p) == want[p] for p in inst) and not stale
    root_todo = [p for p in at_root if on_board.get(p) != want[p]]
    if current:  # the board runs this install already
        send, seed = [], []
    else:
        staged = [p for p in inst if on_board.get(new_d + p) != want[p]]
        seed = [p for p in staged if on_board.get(cur_d + p) == want[p]]
        send = [p for p in staged if p not in seed]
    todo = root_todo + send
    report: dict[str, Any] = {
        "port": port,
        "board": info,
        "install": (new_d if not current else cur_d).rstrip("/") or ROOT_INSTALL,
        "previous": None if current or not installs else cur_d.rstrip("/") or ROOT_INSTALL,
        "copied": todo,
        "seeded": len(seed),
        "skipped": len(files) - len(todo),
        "dry_run": dry_run,
        "overridden": overridden,
        "removed": [OVERRIDE_FILE] if stale else [],
        "repaired": [],
        "verified": False,
        "restarted": False,
    }
    out("%s, %d already identical%s" % (
        _plural(len(todo), "file differs", "files differ"), len(files) - len(todo),
        " (%d of them copied on the board from the running install)" % len(seed) if seed
        else ""))  # fmt: skip
    if dry_run:
        state["phase"] = "dry-run"
        for p in todo:
            out("  would copy %s (%d bytes)" % (p, len(files[p])))
        if stale:
            out("  would leave out %s (an override for an earlier config)" % OVERRIDE_FILE)
        # the probe stopped the firmware: it runs again before flash leaves
        board.restart(info["platform"], keep_open=True)
        state["restarted"] = True
        report["restarted"] = True
        state["phase"] = "watching"
        report["running"] = board.watch_boot(boot_timeout, what="the board's firmware")
        out("restarted: the board runs its firmware again, nothing changed (valve closed until "
            "staff reset it on site)")  # fmt: skip
        return report

    # 1. stage: the running install is never touched; nothing names the staging directory
    state["phase"] = "copy"
    if not current:
        # a file where a directory must be, a directory where a file must be: removed
        report["repaired"] = board.fix_layout(
            ["gg", new_d.rstrip("/")] + _dirs([new_d + p for p in inst]),
            [POINTER, POINTER + ".new"]
            + [new_d + p for p in inst]
            + [p + ".new" for p in root_todo],
        )
        if report["repaired"]:
            out("repaired the board's layout: removed %s (in the way of the install)"
                % ", ".join(report["repaired"]))  # fmt: skip
        if new in installs:  # the fallback is overwritten now: gg/current stops naming it
            board.point([cur])
        state["staged"] = [new_d.rstrip("/")]
        board.remove_all([p for p in board.walk(new_d.rstrip("/"))
                          if p[len(new_d):] not in files])  # fmt: skip
        board.makedirs(_dirs([new_d + p for p in inst]))
        board.copy_on_board([(cur_d + p, new_d + p) for p in seed])
    state["staged"] += [p + ".new" for p in root_todo]
    bar = Progress(sum(len(files[p]) for p in todo),
                   sys.stderr.isatty() if progress is None else progress)  # fmt: skip
    try:
        for p in todo:
            dest = p + ".new" if p in at_root else new_d + p
            board.write(dest, files[p], bar.file(p, len(files[p])))
    finally:
        bar.end()
    check = [p + ".new" for p in root_todo] + ([] if current else [new_d + p for p in inst])
    back = board.hashes(check)
    bad = [p for p in check if back.get(p) != want[p.removesuffix(".new").removeprefix(new_d)]]
    if bad:
        raise FlashError(
            "read-back digest differs for %s; the old firmware is still in place: flash again"
            % ", ".join(bad)
        )
    report["verified"] = True
    digest = _sha(b"".join(want[p].encode() for p in sorted(files)))[:16]
    report["image_digest"] = digest
    if current:
        out("the board runs this image already (image %s): nothing to switch" % digest)
    else:
        out("verified: every file's sha256 read back matches (image %s)" % digest)

    # 2. switch: the boot files first (main.py boots the old install and the new one alike),
    # then the one rename; the install no pointer names is left behind. The fallback named is
    # one that exists (none: the new install alone)
    state["phase"] = "switching"
    board.rename([(p + ".new", p) for p in root_todo])
    state["staged"] = []
    if not current:
        board.point([new, cur] if installs else [new])
        state["switched"] = True
        out(
            "switched: %s runs from the next boot; %s"
            % (
                report["install"],
                (
                    "no earlier install to fall back to"
                    if not installs
                    else "the bench install (the board's root) stays as its fallback"
                    if cur == ROOT_INSTALL
                    else "%s stays as its fallback" % report["previous"]
                ),
            )
        )
        if cur != ROOT_INSTALL:
            board.remove_all(list(LEGACY))  # a bench layout from before the first flash

    # 3. restart and watch the firmware come up, and its detectors answer
    board.restart(info["platform"], keep_open=True)
    state["restarted"] = True
    report["restarted"] = True
    state["phase"] = "watching"
    out("restarted: watching the console for the firmware's %r line" % HEALTHY)
    try:
        report["running"] = board.watch_boot(boot_timeout, cfg=cfg, settle=_settle(cfg))
    except BootRefused as e:
        if not state["switched"]:
            raise
        raise _switch_back(board, e, cur if installs else None, info["platform"],
                           boot_timeout, state) from None  # fmt: skip
    out("running: the firmware boots with the new config (valve closed until reset)")
    return report


def _switch_back(
    board: Board,
    e: BootRefused,
    previous: str | None,
    platform: str,
    boot_timeout: float,
    state: dict[str, Any],
) -> FlashError:
    """The board refused the new install (its config, say) as it started: gg/current names the
    previous install again, and the board restarts into it (issue 22 attack M4)."""
    said = "the board refused the new config; it says:\n  %s" % "\n  ".join(e.said)
    if previous is None:
        return FlashError(
            "%s\nthere is no earlier install on the board to go back to: it halts with its "
            "valve safe; fix what it names and run the same command again" % said
        )
    state["phase"] = "switching back"
    name = install_dir(previous).rstrip("/") or "the bench install at the board's root"
    board.point_back([previous])
    state["switched"] = False
    board.restart(platform, keep_open=True)
    state["phase"] = "watching"
    try:
        board.watch_boot(boot_timeout, what="the previous install")
    except FlashError as again:
        return FlashError(
            "%s\nflash switched the board back to the previous install, %s, but it does not "
            "come up either:\n  %s" % (said, name, str(again).replace("\n", "\n  "))
        )
    return FlashError(
        "%s\nflash switched the board back to the previous install, %s, which runs again "
        "(valve closed until staff reset it on site): fix what the board names and run the "
        "same command again" % (said, name)
    )


def main(args: Any) -> int:
    as_json = bool(getattr(args, "json", False))

    stream = sys.stderr if as_json else sys.stdout  # bound now: nothing else reaches stdout

    def say(text: str) -> None:  # with --json, stdout holds the JSON alone
        print(text, file=stream, flush=True)

    def failed(message: str, code: int) -> int:
        print("gasguard flash: %s" % message, file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": message, "exit_code": code}))
        return code

    override = None
    if args.override is not None:
        if not args.override.strip():
            return failed("--override needs the reason, in words", 2)
        if not (args.installer or "").strip():  # the record names a person, not a login
            return failed(
                "--override needs --installer NAME (name and licence number): the override and "
                "who made it go into the commissioning record",
                2,
            )
        override = {"by": args.installer.strip(), "reason": args.override.strip()}
    try:
        report = flash(
            args.port,
            Path(args.config),
            Path(args.key) if args.key else None,
            dry_run=args.dry_run,
            progress=False if args.no_progress else None,
            out=say,
            override=override,
        )
    except FlashError as e:
        return failed(str(e), e.code)
    except KeyboardInterrupt:  # before flash reached the board (the config, the compile)
        return failed("interrupted: nothing was changed on the board", INTERRUPTED)
    if as_json:
        print(json.dumps(dict(report, ok=True, exit_code=0)))
    return 0


def register(sub: Any) -> None:
    f = sub.add_parser(
        "flash",
        help="put firmware, config and key on a board over its REPL",
        epilog="here:\n  1  the board refused the new firmware or config as it started (flash "
        "switched it\n     back to the previous install), a detector reports a fault after the "
        "restart,\n     a digest differs, or the board's filesystem is full\n"
        "  2  the config is refused, --key is not the config's key, --override without\n"
        "     --installer, or the port is the board's link UART or another device\n"
        "  3  nothing answers on the port, another program holds it, or the board went away\n"
        "  130  interrupted (Ctrl-C): the board is restarted into the install it boots\n\n"
        "flash stops the board's firmware while it works (the valve closed); it restarts the "
        "board\nbefore it ends, after --dry-run and any failure too, or says the firmware is "
        "stopped\nwhen the board cannot be reached",
    )
    f.add_argument("--port", required=True, help="serial port (/dev/ttyUSB0) or a vboard REPL pty")
    f.add_argument("--config", required=True, help="device config (JSON)")
    f.add_argument("--key", help="key file (hex); default: the config's key_hex")
    f.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would change, write nothing (the board is restarted)",
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--json", action="store_true", help="print a JSON report at the end")
    f.add_argument(
        "--override",
        metavar="REASON",
        help="flash although install rules fail (never what the board refuses); the reason, "
        "who and what go on the board and into the commissioning record",
    )
    f.add_argument("--installer", help="who overrides (name and licence number; needed with "
                   "--override)")  # fmt: skip
    f.set_defaults(run=main)
