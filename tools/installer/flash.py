"""`gasguard flash --port PORT --config FILE`: put the firmware, the device config and its key on
a board running MicroPython, over its USB serial REPL (ESP32) or a virtual board's REPL pty.

Steps: check the config exactly as `gasguard config check` does (schema, the firmware's own
validator, the install rules) and refuse it on any error; compile the firmware with mpy-cross;
connect with mpremote's serial transport without a soft reset (the running firmware is
interrupted with Ctrl-C, which leaves the valve closed); refuse a board whose MicroPython cannot
load our bytecode; hash what is on the board in one round trip and copy only files that differ;
write config.json (without the install block and the key, which go to the commissioning record
and key.hex) and key.hex; read every digest back and compare; restart the board.

`--override REASON` flashes a config whose only errors are install-rule findings (placement,
service life, backup power, ...) and writes who overrode what and why to override.json on the
board, where `gasguard commission` reads it into the commissioning record. What the board itself
would refuse at boot, and an ESP32 pin that cannot work, can never be overridden.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from gasguard.tools.image import install_firmware
from gasguard.tools.installer import configcheck

OVERRIDE_FILE = "override.json"  # on the board, beside config.json
# the safe core's pin map (firmware/lib/gasguard/safe.py): written first, so that a board whose
# flash is cut short after it still drives this config's valve safe at boot
PINMAP_FILE = "board.json"
MIN_VERSION = (1, 23)  # the first release reading bytecode v6.3, what our mpy-cross emits
MPY_VERSION = (6, 3)
PLATFORMS = {"esp32": "ESP32", "linux": "virtual board (unix port)"}
CHUNK = 512


class FlashError(Exception):
    """What went wrong, in words an installer can act on; exit code 1 (board) or 2 (input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Progress:
    """One line on stderr redrawn in place: [#####.....] 12/40 files, 35/120 kB."""

    def __init__(self, total_bytes: int, files: int, enabled: bool) -> None:
        self.total = max(total_bytes, 1)
        self.files = files
        self.done_files = 0
        self.done = 0
        self.enabled = enabled

    def file_done(self, size: int) -> None:
        self.done_files += 1
        self.done += size
        self.draw(0)

    def draw(self, partial: int) -> None:
        if not self.enabled:
            return
        n = self.done + partial
        width = 30
        fill = int(width * n / self.total)
        sys.stderr.write(
            "\r  [%s%s] %d/%d files, %.0f/%.0f kB"
            % ("#" * fill, "." * (width - fill), self.done_files, self.files, n / 1024,
               self.total / 1024)
        )  # fmt: skip
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


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
) -> dict[str, bytes]:
    """Every file the board should hold, by its path on the board's filesystem. Refuses (exit
    code 2) exactly what `gasguard config check` refuses, unless override (by, reason) is given
    and every error is an overridable install-rule finding; then override.json records them."""
    try:
        _, cfg, found = configcheck.check_file(config_path, today)
    except configcheck.ConfigFileError as e:
        raise FlashError("%s: %s" % (config_path, e), 2) from None
    errors = [f for f in found if f.level == "error"]
    if errors and (override is None or not all(f.overridable for f in errors)):
        raise refused(config_path, errors, override is not None)
    key = read_key(cfg, key_path)
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


class Board:
    """The board's REPL through mpremote's serial transport."""

    def __init__(self, port: str) -> None:
        import serial
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        # mpremote reports any open failure as "failed to access": look first, to say why
        try:
            serial.Serial(port, 115200, exclusive=True).close()
        except (serial.SerialException, OSError) as e:
            text = str(e)
            if "lock" in text or "busy" in text.lower() or "Errno 16" in text:
                raise FlashError(
                    "%s is in use by another program (a serial monitor, mpremote or the "
                    "gateway): close it and try again" % port
                ) from None
            raise FlashError("cannot open %s: %s" % (port, text)) from None
        try:
            self.t = SerialTransport(port, baudrate=115200, exclusive=True, timeout=1)
        except TransportError as e:
            raise FlashError("cannot open %s: %s" % (port, e)) from None
        try:
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=5)
        except (TransportError, OSError) as e:
            self.t.close()
            raise FlashError(
                "no MicroPython REPL answers on %s (%s): is MicroPython installed on the board? "
                "See the README: install MicroPython with esptool first" % (port, e)
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

    def restart(self, platform: str) -> None:
        if platform == "esp32":
            try:  # the board resets at once and never answers
                self.t.exec_raw_no_follow("import machine\nmachine.reset()")
            except Exception:  # noqa: BLE001 - whatever the dropped line raises
                pass
        else:  # unix port: leave raw REPL, Ctrl-D ends the REPL; the virtual board reboots
            self.t.exit_raw_repl()
            self.t.serial.write(b"\x04")
        self.t.close()

    def close(self) -> None:
        try:
            self.t.exit_raw_repl()
        finally:
            self.t.close()


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


def flash(
    port: str,
    config: Path,
    key: Path | None = None,
    dry_run: bool = False,
    progress: bool | None = None,
    out=print,
    override: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Returns a report: board, copied, skipped, verified, restarted (and overridden)."""
    with tempfile.TemporaryDirectory(prefix="gasguard-flash-") as tmp:
        files = build_image(config, key, Path(tmp), override)
    out("image: %d files, %.0f kB (firmware compiled with mpy-cross)" % (
        len(files), sum(len(b) for b in files.values()) / 1024))  # fmt: skip
    overridden = json.loads(files[OVERRIDE_FILE])["overridden"] if OVERRIDE_FILE in files else []
    for f in overridden:
        out("OVERRIDDEN by %s (%s): %s: %s [%s]" % (
            override and override["by"], override and override["reason"], f["field"],
            f["message"], f["rule"]))  # fmt: skip
    board = Board(port)
    restarted = False
    try:
        info = board.identify()
        check_supported(info)
        out(
            "board: MicroPython %s on %s (%s)"
            % (".".join(str(x) for x in info["version"]), PLATFORMS[info["platform"]],
               info.get("machine", ""))
        )  # fmt: skip
        on_board = board.hashes(sorted(files) + [OVERRIDE_FILE] * (OVERRIDE_FILE not in files))
        # the pin map first: whatever the flash is cut short by, the next boot's safe core
        # drives this config's valve
        order = sorted(files, key=lambda p: (p != PINMAP_FILE, p))
        todo = [p for p in order if on_board.get(p) != _sha(files[p])]
        # an override made for an earlier config must not reach this one's record
        stale = OVERRIDE_FILE not in files and on_board.get(OVERRIDE_FILE) is not None
        report = {
            "port": port,
            "board": info,
            "copied": todo,
            "skipped": len(files) - len(todo),
            "dry_run": dry_run,
            "overridden": overridden,
            "removed": [OVERRIDE_FILE] if stale else [],
        }
        out("%d files differ, %d already identical" % (len(todo), len(files) - len(todo)))
        if dry_run:
            for p in todo:
                out("  would copy %s (%d bytes)" % (p, len(files[p])))
            if stale:
                out("  would remove %s (an override for an earlier config)" % OVERRIDE_FILE)
            report["verified"] = False
            report["restarted"] = False
            return report
        if stale:
            board.remove(OVERRIDE_FILE)
        dirs = sorted({str(Path(p).parent) for p in todo if "/" in p}, key=len)
        expanded = set()
        for d in dirs:
            parts = Path(d).parts
            for i in range(1, len(parts) + 1):
                expanded.add("/".join(parts[:i]))
        board.makedirs(sorted(expanded, key=lambda d: d.count("/")))
        bar = Progress(sum(len(files[p]) for p in todo), len(todo), progress is not False)
        if progress is None:
            bar.enabled = sys.stderr.isatty()
        for p in todo:
            board.write(p, files[p], lambda n, _total: bar.draw(n))
            bar.file_done(len(files[p]))
        bar.end()
        back = board.hashes(sorted(files))
        bad = [p for p in files if back.get(p) != _sha(files[p])]
        if bad:
            raise FlashError("read-back digest differs for %s: flash again" % ", ".join(bad))
        report["verified"] = True
        digest = _sha(b"".join(_sha(files[p]).encode() for p in sorted(files)))[:16]
        report["image_digest"] = digest
        out("verified: every file's sha256 read back matches (image %s)" % digest)
        board.restart(info["platform"])
        restarted = True
        report["restarted"] = True
        out("restarted: the firmware boots with the new config (valve closed until reset)")
        return report
    finally:
        if not restarted:
            board.close()


def main(args: Any) -> int:
    override = None
    if args.override is not None:
        if not args.override.strip():
            print("gasguard flash: --override needs the reason, in words", file=sys.stderr)
            return 2
        override = {"by": args.installer or getpass.getuser(), "reason": args.override.strip()}
    try:
        report = flash(
            args.port,
            Path(args.config),
            Path(args.key) if args.key else None,
            dry_run=args.dry_run,
            progress=False if args.no_progress else None,
            override=override,
        )
    except FlashError as e:
        print("gasguard flash: %s" % e, file=sys.stderr)
        return e.code
    if args.json:
        print(json.dumps(report))
    return 0


def register(sub: Any) -> None:
    f = sub.add_parser("flash", help="put firmware, config and key on a board over its REPL")
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
