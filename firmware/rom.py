# The unix port's stand-in for an ESP32 ROMFS partition. On a board built with ROMFS the image
# is memory-mapped flash, mounted at /rom with /rom/lib on sys.path before boot.py runs, and
# imported bytecode runs in place. The unix port has no ROM partition, so the virtual board
# reads the image into one buffer allocated before anything else (one piece at the bottom of the
# heap) and adds its size to -X heapsize: the firmware gets the heap it would have on the board.
import gc
import os
import sys

import vfs


def mount(path="romfs.img"):
    """Mount the image if there is one; return the heap bytes it takes (0: no image)."""
    try:
        n = os.stat(path)[6]
    except OSError:
        return 0
    gc.collect()
    before = gc.mem_alloc()
    buf = bytearray(n)
    taken = gc.mem_alloc() - before
    with open(path, "rb") as f:
        f.readinto(buf)
    vfs.mount(vfs.VfsRom(buf), "/rom")
    sys.path.insert(0, "/rom/lib")
    return taken
