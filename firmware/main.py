# GasGuard firmware entry point (ESP32, or the unix port as the virtual board). The safe core
# runs first: the valve is in its safe state before any config, profile or firmware module is
# read, and any failure on the way to the running loop ends in gasguard.safe.halt().
import sys

if sys.platform == "esp32":
    ROOT = "/data"
    CONFIG = "/config.json"
    KEY = "/key.hex"
    PINMAP = "/board.json"
else:
    import os

    ROOT = os.getcwd() + "/data"
    CONFIG = "config.json"
    KEY = "key.hex"
    PINMAP = "board.json"
    # the virtual board's ROMFS partition, if it was given one (on a board it is mounted before
    # boot.py); looked for here so that a board without one spends no heap on importing rom
    try:
        os.stat("romfs.img")
    except OSError:
        pass
    else:
        import rom

        rom.mount()

import gasguard.safe  # noqa: E402 (module names only: the boot code is dropped once it is done)

gasguard.safe.start(PINMAP)
up = None
try:
    if sys.platform == "esp32":
        from gasguard.hal import esp32 as hal
    else:
        from gasguard.hal import unix as hal
    import gasguard.start

    up = gasguard.start.boot(lambda cfg: hal.Board(cfg, ROOT), CONFIG, KEY, PINMAP)
except KeyboardInterrupt:
    gasguard.safe.halt("STOPPED at boot from the console", stopped=True)
except Exception as e:  # noqa: BLE001 - whatever stopped the boot: the safe core takes over
    gasguard.safe.halt("BOOT FAILED: %s: %s" % (type(e).__name__, e))
if up:
    # the boot code goes before the firmware proper is loaded, so that loads into its room;
    # from app.run on the loop keeps the valve safe itself (every fault ends in the safe state)
    import gc

    gasguard.forget(gasguard, "start")
    gasguard.forget(gasguard, "safe")
    gc.collect()
    try:
        if up[1].link["kind"] != "none":
            import gasguard.link  # noqa: F401 - first, while the heap is in one piece
        from gasguard import app
    except Exception as e:  # noqa: BLE001 - a module missing or no room: safe, and say so
        import gasguard.safe

        gasguard.safe.start(PINMAP)
        gasguard.safe.halt("BOOT FAILED: %s: %s" % (type(e).__name__, e))
    else:
        app.run(up[0], up[1], ROOT)
