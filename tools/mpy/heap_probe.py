# MicroPython side of `gasguard bench firmware-heap` (and of the heap_lock test): boots the real
# firmware in a virtual board's flash directory, lets it settle, then runs the safety cycle alone
# (1) with the heap unlocked, counting bytes allocated, and (2) under micropython.heap_lock(),
# where any allocation raises MemoryError. Prints one line: "HEAPPROBE {json}".
# usage (cwd = flash dir): micropython -X heapsize=N heap_probe.py CYCLES
import gc
import json
import os
import sys
import time

import micropython

cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 500
result = {"cycles": cycles}
root = os.getcwd() + "/data"
try:
    from gasguard.start import load_config

    cfg = load_config("config.json", "key.hex")
    from gasguard.hal import unix as hal

    board = hal.Board(cfg, root)
    from gasguard import app as appmod

    gc.collect()
    result["heap_free_before_app"] = gc.mem_free()
    a = appmod.App(board, cfg, root)
    a.run(150)  # settle: every detector polled, boot events written
    gc.collect()
    total = gc.mem_free() + gc.mem_alloc()
    result["heap_total"] = total
    result["heap_free_after_boot"] = gc.mem_free()
    period = a.period
    # (1) unlocked: how many bytes does a steady-state cycle allocate?
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(cycles):
        a.cycle(time.ticks_ms(), time.ticks_us())
        time.sleep_ms(period)
    allocated = gc.mem_alloc() - before
    gc.enable()
    result["bytes_allocated"] = allocated
    result["bytes_per_cycle"] = allocated / cycles
    # (2) locked: any allocation in the cycle is a MemoryError
    polls_before = sum(d.polls for d in a.dets)
    failures = 0
    micropython.heap_lock()
    try:
        for _ in range(cycles):
            try:
                a.cycle(time.ticks_ms(), time.ticks_us())
            except MemoryError:
                failures += 1
            time.sleep_ms(period)
    finally:
        micropython.heap_unlock()
    result["locked_cycles"] = cycles
    result["locked_alloc_failures"] = failures
    result["locked_polls"] = sum(d.polls for d in a.dets) - polls_before
    result["valve_closed"] = a.safety.latched
    result["ok"] = True
except MemoryError as e:
    sys.print_exception(e)
    result["ok"] = False
    result["error"] = "MemoryError: " + str(e)
print("HEAPPROBE " + json.dumps(result))
