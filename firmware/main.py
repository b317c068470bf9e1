# GasGuard firmware entry point (ESP32, or the unix port as the virtual board). The safe core
# runs first: the valve is in its safe state before any config, profile or firmware module is
# read, and any failure on the way to the running loop ends in gasguard.safe.halt().
import os
import sys

if sys.platform == "esp32":
    ROOT = "/data"
else:
    ROOT = os.getcwd() + "/data"
    # the virtual board's ROMFS partition, if it was given one (on a board it is mounted before
    # boot.py); looked for here so that a board without one spends no heap on importing rom
    try:
        os.stat("romfs.img")
    except OSError:
        pass
    else:
        import rom

        rom.mount()

# The install to boot (docs/firmware.md, "Installs"): gg/current names it, then the one before
# it; none named is the board's root, as the bench lays a board out. Its lib/ alone goes on
# sys.path, so no module can come from another install. (Few names: each is a qstr for good.)
# Whatever gg/current holds (bytes that are no text, a name with no install, a directory) the
# safe core must start: the first name whose install has a lib/, else gg/a or gg/b, else the
# root; no pointer at all is the root first. gasguard flash reads it the same way (flash.py).
try:
    with open("gg/current", "rb") as f:
        _n = f.read(16).split() + [b"a", b"b", b"."]
except OSError:  # none (the bench's layout), or not a file
    _n = [b".", b"a", b"b"]
HERE = ""
for _i in _n:
    if _i in (b"a", b"b", b"."):
        HERE = "" if _i == b"." else "gg/%s/" % _i.decode()
        try:
            os.stat(HERE + "lib")
            break
        except OSError:
            HERE = ""
if HERE:
    sys.path[:] = [HERE + "lib"] + [p for p in sys.path if p[-3:] != "lib"]
CONFIG = HERE + "config.json"
KEY = HERE + "key.hex"
PINMAP = HERE + "board.json"

try:
    import gasguard.safe  # noqa: E402 (module names only: the boot code is dropped once done)
except Exception as e:  # noqa: BLE001 - no safe core here: the previous install has one
    import fallback

    fallback.run(e)
    raise

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
