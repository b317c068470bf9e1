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

Exit codes: 0 flashed and running; 1 the board refused or failed to boot it; 2 bad input (the
config, the key, an option); 3 the board went away (the port vanished) or never answered.

`--override REASON` flashes a config whose only errors are install-rule findings (placement,
service life, backup power, ...) and writes who overrode what and why to override.json in the
install, where `gasguard commission` reads it into the commissioning record. What the board
itself would refuse at boot, and an ESP32 pin that cannot work, can never be overridden.
"""

from __future__ import annotations

import datetime
import errno
import getpass
import hashlib
import json
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
LOST_BEFORE = (
    "the board went away during the copy; the old firmware is still in place — reconnect and "
    "run the same command again"
)
LOST_SWITCHING = (
    "the board went away as the new firmware was being switched in; it boots the old one or the "
    "new one, never a mix — reconnect and run the same command again"
)
LOST_AFTER = (
    "the board went away after the new firmware was switched in (it boots with it) — "
    "reconnect and run the same command again to see it come up"
)
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


def read_key(cfg: Any, key_path: Path | None) -> bytes:
    """The device key: the --key file, else the config's key_hex."""
    if key_path is not None:
        try:
            text = Path(key_path).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise FlashError("%s: cannot read the key (%s)" % (key_path, e), 2) from None
    else:
        text = cfg.get("key_hex", "") if isinstance(cfg, dict) else ""
    try:
        key = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise FlashError("key: not hexadecimal", 2) from None
    if len(key) < 16:
        raise FlashError("key: missing or shorter than 16 bytes (use --key or key_hex)", 2)
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
"""
COPY_BATCH = 4


class Board:
    """The board's REPL through mpremote's serial transport."""

    def __init__(self, port: str) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        try:
            self.t = SerialTransport(port, baudrate=115200, exclusive=True, timeout=1)
        except TransportError as e:
            raise FlashError("cannot open %s: %s" % (port, e), 3) from None
        try:
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=5)
        except (TransportError, OSError) as e:
            self.t.close()
            raise FlashError(
                "no MicroPython REPL answers on %s (%s): is MicroPython installed on the board? "
                "See the README: install MicroPython with esptool first" % (port, e), 3
            ) from None

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
        return install_dir(self.installs()[0]) + name

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
        """What gg/current names: the running install first, then its fallback."""
        text = self.t.exec(
            "try:\n    print(open(%r).read())\nexcept OSError:\n    print('')\n" % POINTER
        ).decode()
        names = text.split()
        return names if names else [ROOT_INSTALL]

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
        self.t.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=progress)

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

    def watch_boot(self, timeout: float, on_line: Callable[[str], None]) -> str:
        """The console after a restart, line by line, until the firmware's running line has
        stood for SETTLE_S (returned), or one of its failure lines comes (FlashError with the
        lines that follow it, the board's own words), or the timeout (FlashError)."""
        ser = self.t.serial
        deadline = time.monotonic() + timeout
        partial = b""
        running = ""
        failed: list[str] = []
        settle = 0.0
        seen: list[str] = []
        while True:
            now = time.monotonic()
            if failed and now >= settle:  # first: a fault after the running line counts
                raise FlashError(
                    "the new firmware did not come up cleanly; the board says:\n  %s\nits valve "
                    "stays closed; fix what it names and run the same command again"
                    % "\n  ".join(failed[:12])
                )
            if running and now >= settle:
                return running
            if now >= deadline:
                raise FlashError(
                    "the board did not say it runs within %.0f s of the restart (no %r line); "
                    "its last lines:\n  %s\nlook at its console: mpremote connect %s"
                    % (timeout, HEALTHY, "\n  ".join(seen[-8:]) or "(nothing)", self.port)
                )
            ser.timeout = 0.2
            partial += ser.read(max(1, min(ser.in_waiting, 4096)))
            *done, partial = partial.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace").strip("\r\n\x04> ")
                if not line:
                    continue
                seen.append(line)
                on_line(line)
                if failed:
                    failed.append(line)
                elif line.startswith(FAILED):
                    failed = [line]
                    settle = time.monotonic() + 1.0  # the traceback that follows
                elif line.startswith(HEALTHY) and not running:
                    running = line
                    settle = time.monotonic() + SETTLE_S

    def close(self) -> None:
        try:
            try:
                self.t.exit_raw_repl()
            finally:
                self.t.close()
        except Exception:  # noqa: BLE001 - a port that went away cannot be closed cleanly
            pass


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
    board), skipped, verified, restarted, running (the firmware's line), and overridden."""

    def probe() -> None:
        # what answers on the port (the link UART, silence, a busy port) in words, within a
        # second and with no bytes from it on the terminal, once the config is accepted and
        # before the compile; mpremote would say "failed to access" or, after seconds, "no REPL"
        found = ports.identify(port)
        if found.kind != ports.REPL:
            raise FlashError(found.message, found.code)

    with tempfile.TemporaryDirectory(prefix="gasguard-flash-") as tmp:
        files = build_image(config, key, Path(tmp), override, checked=probe)
    out("image: %d files, %.0f kB (firmware compiled with mpy-cross)" % (
        len(files), sum(len(b) for b in files.values()) / 1024))  # fmt: skip
    overridden = json.loads(files[OVERRIDE_FILE])["overridden"] if OVERRIDE_FILE in files else []
    for f in overridden:
        out("OVERRIDDEN by %s (%s): %s: %s [%s]" % (
            override and override["by"], override and override["reason"], f["field"],
            f["message"], f["rule"]))  # fmt: skip
    board = Board(port)
    from mpremote.transport import TransportError, TransportExecError

    state = {"switching": False, "switched": False, "restarted": False}
    try:
        return _flash_board(board, port, files, overridden, dry_run, progress, out,
                            boot_timeout, state)  # fmt: skip
    except TransportExecError as e:  # the board answered: a step raised there (a full flash)
        raise refused_step(_last_line(e), state["switched"]) from None
    except (OSError, TransportError) as e:
        if not port_lost(e):  # mpremote turns a board's file error into an OSError
            raise refused_step(str(e), state["switched"]) from None
        lost = LOST_SWITCHING if state["switching"] else LOST_BEFORE
        raise FlashError(LOST_AFTER if state["switched"] else lost, 3) from None
    finally:
        if not state["restarted"]:
            board.close()
        else:
            try:
                board.t.close()
            except Exception:  # noqa: BLE001 - already gone
                pass


def refused_step(why: str, switched: bool) -> FlashError:
    return FlashError(
        "the board refused a step (%s); %s: run the same command again"
        % (why, "the new firmware is switched in" if switched
           else "the old firmware is still in place")
    )  # fmt: skip


def port_lost(e: Exception) -> bool:
    """A port that went away (a pulled cable, a board reset from elsewhere): pyserial's errors,
    mpremote's own for a line that stopped answering, or the errno of a vanished device."""
    import serial
    from mpremote.transport import TransportError

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


def _flash_board(
    board: Board,
    port: str,
    files: dict[str, bytes],
    overridden: list,
    dry_run: bool,
    progress: bool | None,
    out: Callable[[str], None],
    boot_timeout: float,
    state: dict[str, bool],
) -> dict[str, Any]:
    info = board.identify()
    check_supported(info)
    out("board: MicroPython %s on %s (%s)" % (
        ".".join(str(x) for x in info["version"]), PLATFORMS[info["platform"]],
        info.get("machine", "")))  # fmt: skip
    board.load_helpers()
    want = {p: _sha(d) for p, d in files.items()}
    at_root = sorted(root_files() & set(files))
    inst = sorted(set(files) - set(at_root))
    installs = board.installs()
    cur = installs[0]
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
        "previous": None if current else cur_d.rstrip("/") or ROOT_INSTALL,
        "copied": todo,
        "seeded": len(seed),
        "skipped": len(files) - len(todo),
        "dry_run": dry_run,
        "overridden": overridden,
        "removed": [OVERRIDE_FILE] if stale else [],
        "verified": False,
        "restarted": False,
    }
    out("%d files differ, %d already identical%s" % (
        len(todo), len(files) - len(todo),
        " (%d of them copied on the board from the running install)" % len(seed) if seed
        else ""))  # fmt: skip
    if dry_run:
        for p in todo:
            out("  would copy %s (%d bytes)" % (p, len(files[p])))
        if stale:
            out("  would leave out %s (an override for an earlier config)" % OVERRIDE_FILE)
        return report

    # 1. stage: the running install is never touched; nothing names the staging directory
    if not current:
        if new in installs:  # the fallback is overwritten now: gg/current stops naming it
            board.point([cur])
        board.remove_all([p for p in board.walk(new_d.rstrip("/"))
                          if p[len(new_d):] not in files])  # fmt: skip
        board.makedirs(_dirs([new_d + p for p in inst]))
        board.copy_on_board([(cur_d + p, new_d + p) for p in seed])
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
    # then the one rename; the install no pointer names is left behind
    board.rename([(p + ".new", p) for p in root_todo])
    if not current:
        state["switching"] = True
        board.point([new, cur])
        state["switched"] = True
        out("switched: %s runs from the next boot; %s stays as its fallback"
            % (report["install"], "the bench install (the board's root)" if cur == ROOT_INSTALL
               else report["previous"]))  # fmt: skip
        if cur != ROOT_INSTALL:
            board.remove_all(list(LEGACY))  # a bench layout from before the first flash

    # 3. restart and watch the firmware come up
    board.restart(info["platform"], keep_open=True)
    state["restarted"] = True
    report["restarted"] = True
    out("restarted: watching the console for the firmware's %r line" % HEALTHY)
    report["running"] = board.watch_boot(boot_timeout, lambda line: out("  board: " + line))
    out("running: the firmware boots with the new config (valve closed until reset)")
    return report


def main(args: Any) -> int:
    as_json = bool(getattr(args, "json", False))

    def say(text: str) -> None:  # with --json, stdout holds the JSON alone
        print(text, file=sys.stderr if as_json else sys.stdout)

    def failed(message: str, code: int) -> int:
        print("gasguard flash: %s" % message, file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": message, "exit_code": code}))
        return code

    override = None
    if args.override is not None:
        if not args.override.strip():
            return failed("--override needs the reason, in words", 2)
        override = {"by": args.installer or getpass.getuser(), "reason": args.override.strip()}
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
    if as_json:
        print(json.dumps(dict(report, ok=True, exit_code=0)))
    return 0


def register(sub: Any) -> None:
    f = sub.add_parser(
        "flash",
        help="put firmware, config and key on a board over its REPL",
        epilog="here:\n  1  the board's own check after the restart failed, or a digest differs\n"
        "  2  the config is refused, or the port is the board's link UART or another device\n"
        "  3  nothing answers on the port, another program holds it, or the board went away",
    )
    f.add_argument("--port", required=True, help="serial port (/dev/ttyUSB0) or a vboard REPL pty")
    f.add_argument("--config", required=True, help="device config (JSON)")
    f.add_argument("--key", help="key file (hex); default: the config's key_hex")
    f.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--json", action="store_true", help="print a JSON report at the end")
    f.add_argument(
        "--override",
        metavar="REASON",
        help="flash although install rules fail (never what the board refuses); the reason, "
        "who and what go on the board and into the commissioning record",
    )
    f.add_argument("--installer", help="who overrides (name and licence number)")
    f.set_defaults(run=main)
