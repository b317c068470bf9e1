"""The device image: what goes on a board, read from firmware/manifest.py, and building it into
a flash directory (as files, or as one ROMFS image). Shared by the installer (gasguard flash) and
the simulator (the virtual board), so neither imports the other.
"""

from __future__ import annotations

import ast
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

LAYOUTS = ("files", "romfs")
ROM_IMAGE = "romfs.img"


def package_root() -> Path:
    """Directory holding the protocol/ and firmware/ sources (the repo, or the installed wheel)."""
    from gasguard import protocol

    return Path(protocol.__file__).resolve().parent.parent


def protocol_dir() -> Path:
    from gasguard import protocol

    return Path(protocol.__file__).resolve().parent


def firmware_dir() -> Path:
    return package_root() / "firmware"


@cache
def manifest() -> dict[str, tuple[str, ...]]:
    """firmware/manifest.py's names and values, read as data (it is never run on the host)."""
    tree = ast.parse((firmware_dir() / "manifest.py").read_text())
    out: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            value = ast.literal_eval(node.value)
            out[node.targets[0].id] = (value,) if isinstance(value, str) else tuple(value)
    return out


def files() -> list[tuple[Path, str]]:
    """Every file of the image as (source, path on the board), sources as the manifest has them:
    .py files go on as bytecode except ROOT_SOURCE (see install_firmware)."""
    m, fw, proto = manifest(), firmware_dir(), protocol_dir()
    out = [(fw / name, name) for name in m["ROOT_SOURCE"] + m["ROOT_BYTECODE"] + m["FIRMWARE"]]
    out += [(proto / name, "lib/gasguard/protocol/" + name) for name in m["PROTOCOL"]]
    for pattern in m["PROFILES"]:
        out += [
            (src, "lib/gasguard/protocol/" + src.relative_to(proto).as_posix())
            for src in sorted(proto.glob(pattern))
        ]
    return out


def module_name(mpy: Path) -> str:
    """Dotted module name of a .mpy under lib/ ("gasguard/protocol/frame.mpy" ->
    "gasguard.protocol.frame"). Compiled in as the file's name for tracebacks: the import
    interns the module name anyway, so each file costs one qstr fewer (qstrs are never freed
    and their pool grows by doubling: on a 110 KB heap a few dozen decide a 7 KB step)."""
    parts = list(mpy.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def mpy_cross(src: Path, out: Path, source_name: str | None = None) -> None:
    """Compile one file to MicroPython bytecode. `source_name` is what tracebacks call the file
    (default: the source's file name)."""
    exe = Path(sys.executable).parent / "mpy-cross"
    name = source_name or src.name
    cmd = [str(exe) if exe.exists() else "mpy-cross", "-o", str(out), "-s", name, str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("mpy-cross failed on %s: %s" % (src, proc.stderr.strip()))


def install_firmware(flash: Path, layout: str = "files", extra: tuple[Path, ...] = ()) -> int:
    """Lay the image into a flash directory as the bench lays a board out (the install at the
    root; `gasguard flash` puts the same files in an install directory, docs/firmware.md):
    ROOT_SOURCE (main.py, boot.py) as source, ROOT_BYTECODE (rom.mpy, fallback.mpy), and the
    rest as .mpy bytecode with the profiles as JSON (and the `extra` modules, at the top of
    lib/). Either as files under lib/gasguard (`files`: what stock MicroPython runs from its
    littlefs, and what `gasguard flash` copies), or as one ROMFS image
    whose lib/ mounts at /rom (`romfs`: a build with a ROMFS partition, where the bytecode stays
    in flash). Returns the number of files compiled."""
    if layout not in LAYOUTS:
        raise ValueError("layout must be one of %s" % ", ".join(LAYOUTS))
    if layout == "romfs":
        from mpremote.romfs import make_romfs

        with tempfile.TemporaryDirectory() as tmp:
            n = _install_lib(Path(tmp), extra)
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree
                image = make_romfs(tmp, mpy_cross=False)
            (flash / ROM_IMAGE).write_bytes(image)
        shutil.rmtree(flash / "lib", ignore_errors=True)  # it would be shadowed: don't keep it
    else:
        n = _install_lib(flash, extra)
        (flash / ROM_IMAGE).unlink(missing_ok=True)
    m = manifest()
    for src, name in files():
        if name in m["ROOT_SOURCE"]:
            shutil.copy(src, flash / name)
        elif name in m["ROOT_BYTECODE"]:
            # bytecode, not source: compiling source interns every local name as a qstr for good
            mpy_cross(src, flash / Path(name).with_suffix(".mpy"), Path(name).stem)
            n += 1
    return n


def _install_lib(root: Path, extra: tuple[Path, ...]) -> int:
    jobs = [(src, root / name) for src, name in files() if name.startswith("lib/")]
    jobs += [(src, root / "lib" / src.name) for src in extra]
    n = 0
    for src, dst in jobs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix != ".py":  # data (the profiles): as is
            shutil.copy(src, dst)
            continue
        out = dst.with_suffix(".mpy")
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        mpy_cross(src, out, module_name(out.relative_to(root / "lib")))
        n += 1
    return n
