# GasGuard firmware entry point (ESP32, or the unix port as the virtual board).
import sys

if sys.platform == "esp32":
    from gasguard.hal import esp32 as hal

    ROOT = "/data"
    CONFIG = "/config.json"
    KEY = "/key.hex"
else:
    import os

    # the virtual board's ROMFS partition, if it was given one; looked for here so that a board
    # without one does not spend heap on importing rom
    try:
        os.stat("romfs.img")
    except OSError:
        pass
    else:
        import rom

        rom.mount()
    from gasguard.hal import unix as hal

    ROOT = os.getcwd() + "/data"
    CONFIG = "config.json"
    KEY = "key.hex"

from gasguard.start import main  # noqa: E402

main(lambda cfg: hal.Board(cfg, ROOT), ROOT, CONFIG, KEY)
