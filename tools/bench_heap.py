"""`gasguard bench firmware-heap`: the firmware's heap on the MicroPython unix port.

Boots the real firmware (a virtual board's flash, pymodbus detectors on the paced line), then
measures the steady-state safety cycle: bytes allocated per cycle with the heap unlocked, and
allocation failures under micropython.heap_lock(). Runs at the ESP32-like 110k heap first; if the
firmware does not fit there it says so and measures at the virtual board's heap size as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from gasguard.tools import micropython
from gasguard.tools.detsim import DetectorBus, SimDetector
from gasguard.tools.vboard import install_firmware

KEY = bytes(range(16))
PROBE = Path(__file__).parent / "mpy" / "heap_probe.py"


def _config(bus_path: str) -> dict:
    return {
        "device_id": "bench-1",
        "site": "bench",
        "gas": "ng",
        "loop_ms": 20,
        "link": {"kind": "none"},
        "bus": {"path": bus_path},
        "detectors": [
            {"address": a, "profile": "generic-x10", "gas": "methane"} for a in (1, 2, 3, 4)
        ],
        "valve": {"kind": "nc", "pin": 25},
    }


def probe(heapsize: str, cycles: int) -> dict:
    dets = [SimDetector(a, "generic-x10") for a in (1, 2, 3, 4)]
    with DetectorBus(dets) as bus, tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp)
        install_firmware(flash)
        (flash / "config.json").write_text(json.dumps(_config(bus.board_path)))
        (flash / "key.hex").write_text(KEY.hex())
        (flash / "data").mkdir()
        env = dict(os.environ, MICROPYPATH=str(flash / "lib"))
        proc = subprocess.run(
            [
                micropython.find_micropython(),
                "-X",
                "heapsize=" + heapsize,
                str(PROBE),
                str(cycles),
            ],
            cwd=flash,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    for line in proc.stdout.splitlines():
        if line.startswith("HEAPPROBE "):
            r = json.loads(line[len("HEAPPROBE ") :])
            r["heapsize"] = heapsize
            return r
    return {
        "ok": False,
        "heapsize": heapsize,
        "error": (proc.stdout + proc.stderr).strip().splitlines()[-1:],
    }


def run(json_path: str | None, cycles: int = 500) -> dict:
    target = probe(micropython.HEAPSIZE, cycles)
    runs = [target]
    best = target
    out = {
        "runtime": "MicroPython %s, unix port, x86-64" % micropython.version(),
        "heapsize": best["heapsize"],
        "bytes_per_cycle": best.get("bytes_per_cycle"),
        "heap_free_pct": (
            round(100 * best["heap_free_after_boot"] / best["heap_total"], 1)
            if best.get("ok")
            else None
        ),
        "cycles": cycles,
        "locked_alloc_failures": best.get("locked_alloc_failures"),
        "fits_110k": bool(target.get("ok")),
        "runs": runs,
    }
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


def table(out: dict) -> str:
    rows = [
        ("runtime", out["runtime"]),
        ("heap size", out["heapsize"]),
        ("fits the 110k target", "yes" if out["fits_110k"] else "NO"),
        ("steady-state bytes per cycle", out["bytes_per_cycle"]),
        ("allocation failures under heap_lock", out["locked_alloc_failures"]),
        ("heap free after boot", "%s %%" % out["heap_free_pct"]),
        ("cycles measured", out["cycles"]),
    ]
    return "\n".join("%-38s %s" % r for r in rows)
