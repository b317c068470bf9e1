# MicroPython side of `gasguard bench firmware-heap` (and of the heap_lock test): boots the real
# firmware in a virtual board's flash directory, lets it settle, then runs the safety cycle alone
# (1) with the heap unlocked, counting bytes allocated, and (2) under micropython.heap_lock(),
# where any allocation raises MemoryError. Prints one line: "HEAPPROBE {json}".
# It is installed with the firmware (into its ROMFS image, or lib/) and started as main.py is:
#   cd FLASH; MICROPYPATH=lib:. micropython -X heapsize=N -c \
#     "import rom; n = rom.mount(); import heap_probe; heap_probe.main(n, CYCLES)"
# so the harness costs the heap about what main.py does; json is imported only to print.
import gc
import os
import sys
import time

import micropython


def main(image, cycles):
    """image: heap bytes the ROMFS image took (flash on a board, so not the firmware's heap)."""
    result = {"cycles": cycles, "rom_image_bytes": image}
    root = os.getcwd() + "/data"
    try:
        import gasguard.safe  # the boot main.py does: the safe core first, dropped once running

        gasguard.safe.start("board.json")
        import gasguard.start
        from gasguard.hal import unix as hal

        board, cfg = gasguard.start.boot(
            lambda c: hal.Board(c, root), "config.json", "key.hex", "board.json"
        )
        gasguard.forget(gasguard, "start")
        gasguard.forget(gasguard, "safe")
        gc.collect()
        if cfg.link["kind"] != "none":
            import gasguard.link  # noqa: F401 - as main.py does
        from gasguard import app as appmod

        gc.collect()
        result["heap_free_before_app"] = gc.mem_free()
        a = appmod.App(board, cfg, root)
        a.run(150)  # settle: every detector polled, boot events written
        gc.collect()
        result["heap_total"] = gc.mem_free() + gc.mem_alloc() - image
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
        polls = sum(d.polls for d in a.dets)
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
        result["locked_polls"] = sum(d.polls for d in a.dets) - polls
        result["valve_closed"] = a.safety.latched
        result["ok"] = True
    except MemoryError as e:
        sys.print_exception(e)
        result["ok"] = False
        result["error"] = "MemoryError: " + str(e)
    micropython.qstr_info()  # one line: "qstr pool: n_pool=.., n_qstr=.., ..."
    import json

    print("HEAPPROBE " + json.dumps(result))
