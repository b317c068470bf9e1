"""`gasguard flash --port PORT --config FILE`: put the firmware, the device config and its key on
a board running MicroPython, over its USB serial REPL (ESP32) or a virtual board's REPL pty.

Steps: validate the config as the firmware will at boot; compile the firmware with mpy-cross;
connect with mpremote's serial transport without a soft reset (the running firmware is
interrupted with Ctrl-C, which leaves the valve closed); refuse a board whose MicroPython cannot
load our bytecode; hash what is on the board in one round trip and copy only files that differ;
write config.json and key.hex; read every digest back and compare; restart the board.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from gasguard.tools.vboard import install_firmware
from gasguard.tools.vboard_service import ConfigFileError, read_device_config

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


def build_image(config_path: Path, key_path: Path | None, staging: Path) -> dict[str, bytes]:
    """Every file the board should hold, by its path on the board's filesystem."""
    try:
        cfg, key = read_device_config(config_path, key_path)
    except ConfigFileError as e:
        raise FlashError("%s: %s" % (config_path, e), 2) from None
    from gasguard.tools.configcheck import _firmware_config

    fw = _firmware_config()
    device_cfg = {k: v for k, v in cfg.items() if k not in ("key_hex", "install")}
    try:
        fw.Config(device_cfg, key=key)
    except fw.ConfigError as e:
        raise FlashError(
            "%s: %s: %s (the board would refuse it at boot)" % (config_path, e.field, e.reason), 2
        ) from None
    try:
        install_firmware(staging)
    except (RuntimeError, OSError) as e:
        raise FlashError("cannot compile the firmware: %s" % e, 2) from None
    files = {}
    for p in sorted(staging.rglob("*")):
        if p.is_file():
            files[p.relative_to(staging).as_posix()] = p.read_bytes()
    files["config.json"] = json.dumps(device_cfg, indent=1).encode()
    files["key.hex"] = key.hex().encode()
    return files


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
        return self.eval_json(
            "import sys, json\n"
            "print(json.dumps({'platform': sys.platform, "
            "'version': list(sys.implementation.version[:3]), "
            "'mpy': getattr(sys.implementation, '_mpy', 0), "
            "'machine': getattr(sys.implementation, '_machine', '')}))"
        )

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
) -> dict[str, Any]:
    """Returns a report: board, copied, skipped, verified, restarted."""
    with tempfile.TemporaryDirectory(prefix="gasguard-flash-") as tmp:
        files = build_image(config, key, Path(tmp))
    out("image: %d files, %.0f kB (firmware compiled with mpy-cross)" % (
        len(files), sum(len(b) for b in files.values()) / 1024))  # fmt: skip
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
        on_board = board.hashes(sorted(files))
        todo = [p for p in sorted(files) if on_board.get(p) != _sha(files[p])]
        report = {
            "port": port,
            "board": info,
            "copied": todo,
            "skipped": len(files) - len(todo),
            "dry_run": dry_run,
        }
        out("%d files differ, %d already identical" % (len(todo), len(files) - len(todo)))
        if dry_run:
            for p in todo:
                out("  would copy %s (%d bytes)" % (p, len(files[p])))
            report["verified"] = False
            report["restarted"] = False
            return report
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
    try:
        report = flash(
            args.port,
            Path(args.config),
            Path(args.key) if args.key else None,
            dry_run=args.dry_run,
            progress=False if args.no_progress else None,
        )
    except FlashError as e:
        print("gasguard flash: %s" % e, file=sys.stderr)
        return e.code
    if args.json:
        print(json.dumps(report))
    return 0


def add_parser(sub: Any) -> None:
    f = sub.add_parser("flash", help="put firmware, config and key on a board over its REPL")
    f.add_argument("--port", required=True, help="serial port (/dev/ttyUSB0) or a vboard REPL pty")
    f.add_argument("--config", required=True, help="device config (JSON)")
    f.add_argument("--key", help="key file (hex); default: the config's key_hex")
    f.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--json", action="store_true", help="print a JSON report at the end")
