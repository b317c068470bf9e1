"""A config-like file read safely: a regular file only, its size checked before reading, and a
FIFO, a device or a socket refused without waiting on it. The gateway's config and keys files
and the installer's config check read through here (the installer may import the gateway; the
gateway imports nothing from tools/)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class Refused(ValueError):
    """Why the file was not read, in words; size: the bytes seen when it was too big (more:
    it grew while being read, so there may be more), else None."""

    def __init__(self, reason: str, size: int | None = None, more: bool = False) -> None:
        super().__init__(reason)
        self.size = size
        self.more = more


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, word in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):  # fmt: skip
        if test(mode):
            return word
    return "not a regular file"


def read_regular(path: Path, cap: int) -> bytes:
    """A regular file's bytes, at most cap of them; raises Refused."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO never waits for a writer
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Refused("cannot read: a symlink loop") from None
        raise Refused("cannot read (%s)" % (e.strerror or e)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Refused("%s, not a regular file" % kind(st.st_mode))
        if st.st_size > cap:
            raise Refused("over %d bytes" % cap, st.st_size)
        try:
            raw = f.read(cap + 1)
        except OSError as e:
            raise Refused("cannot read (%s)" % (e.strerror or e)) from None
    if len(raw) > cap:  # grew while we looked
        raise Refused("over %d bytes" % cap, len(raw), more=True)
    return raw
