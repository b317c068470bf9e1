# GasGuard firmware entry point (ESP32, or the unix port as the virtual board).
import sys

# A heap reserve, taken first so that it lies low in a heap still in one piece, and handed back
# just before the device's objects are built: loading the config and the modules leaves the
# rest of a 110 KB heap in small pieces, and the device's long-lived objects (dicts that grow
# while they are built) need contiguous blocks. Without it a board can boot-loop on MemoryError.
RESERVE = [bytearray(6144)]

if sys.platform == "esp32":
    from gasguard.hal import esp32 as hal

    ROOT = "/data"
    CONFIG = "/config.json"
    KEY = "/key.hex"
else:
    import os

    from gasguard.hal import unix as hal

    ROOT = os.getcwd() + "/data"
    CONFIG = "config.json"
    KEY = "key.hex"

from gasguard.start import main  # noqa: E402

main(lambda cfg: hal.Board(cfg, ROOT), ROOT, CONFIG, KEY, RESERVE)
