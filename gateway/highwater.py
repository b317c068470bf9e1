"""The outbox's high-water mark: the highest row id committed (so acknowledged to a board), in a
small file beside it, to find at start a log that lost commits.

SQLite takes the first WAL frame whose checksum fails (a flipped bit, a truncated file) for the
end of its log: the commits after it vanish and quick_check still passes. The outbox's row ids
come from AUTOINCREMENT, whose counter (sqlite_sequence) is committed with the rows and never
goes down, so a counter at start below the mark means commits were lost: up to that many events
the boards were told are safe. Never a false alarm: the mark is written only after its commit
returned (synchronous=FULL: durable). It is synced at most every SYNC_S (a sync per group
commit would double the commits' syncs), so damage to the last second's commits before a power
cut can go unnoticed; the kernel writes it back on its own within half a minute anyway.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

SUFFIX = "-mark"  # outbox.sqlite-mark: moved aside with the outbox's other files
SYNC_S = 1.0
_FMT = "<QI"  # the row id, the CRC-32 of its 8 bytes


def path_for(outbox: Path) -> Path:
    return Path(str(outbox) + SUFFIX)


def read(outbox: Path) -> int | None:
    """The mark, or None when there is none or it is not whole (then nothing can be told)."""
    try:
        data = path_for(outbox).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < struct.calcsize(_FMT):
        return None
    rid, crc = struct.unpack_from(_FMT, data)
    return rid if zlib.crc32(data[:8]) == crc else None


NO_ROW = -1  # row ids start at 1


class HighWater:
    """Written in place (one 12-byte write, no rename) on the outbox's writer thread."""

    def __init__(self, outbox: Path, rid: int) -> None:
        self._fd = os.open(path_for(outbox), os.O_RDWR | os.O_CREAT, 0o600)
        self._synced_at = 0.0
        self.rid = NO_ROW  # so that the first set() writes
        self.set(rid, sync=True)

    def set(self, rid: int, sync: bool = False) -> None:
        if rid == self.rid:
            return
        self.rid = rid
        head = struct.pack("<Q", rid)
        os.pwrite(self._fd, head + struct.pack("<I", zlib.crc32(head)), 0)
        now = time.monotonic()
        if sync or now - self._synced_at >= SYNC_S:
            os.fdatasync(self._fd)
            self._synced_at = now

    def close(self) -> None:
        os.fdatasync(self._fd)
        os.close(self._fd)
