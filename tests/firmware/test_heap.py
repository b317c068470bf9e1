"""The steady-state safety cycle allocates nothing: proven with micropython.heap_lock() on the
real firmware polling pymodbus detectors (tools/mpy/heap_probe.py)."""

from gasguard.tools import bench_heap, micropython


def test_steady_state_cycle_allocates_nothing_under_heap_lock():
    r = bench_heap.probe(micropython.HEAPSIZE, 200)
    assert r["ok"], r
    assert r["locked_polls"] >= 20  # real Modbus transactions completed while locked
    assert r["locked_alloc_failures"] == 0
    assert r["bytes_allocated"] == 0
    assert r["valve_closed"]  # nobody pressed reset: it stayed closed throughout
