"""The steady-state safety cycle allocates nothing: proven with micropython.heap_lock() on the
real firmware polling pymodbus detectors (tools/sim/mpy/heap_probe.py), with the bytecode in a
ROMFS image (a board built with a ROMFS partition) and as .mpy files in the heap (stock
MicroPython)."""

import pytest

from gasguard.tools.bench import bench_heap
from gasguard.tools.sim import micropython


@pytest.mark.parametrize("layout", ["romfs", "files"])
def test_steady_state_cycle_allocates_nothing_under_heap_lock(layout):
    r = bench_heap.probe(micropython.HEAPSIZE, 200, layout)
    assert r["ok"], r
    assert r["locked_polls"] >= 20  # real Modbus transactions completed while locked
    assert r["locked_alloc_failures"] == 0
    assert r["bytes_allocated"] == 0
    assert r["valve_closed"]  # nobody pressed reset: it stayed closed throughout
    if layout == "romfs":  # the image was mounted and taken out of the firmware's heap
        assert r["rom_image_bytes"] > 40_000
    else:
        assert r["rom_image_bytes"] == 0
