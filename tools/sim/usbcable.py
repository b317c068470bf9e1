"""A USB serial cable to a virtual board's REPL pty that a test can pull out: after `cut_after`
bytes from the host, or right after the host has sent the bytes `cut_at` (counted, not timed, so
a cut falls at the same place every run), both ends go dead as a pulled cable's do. The host
opens `path`; what it sent is kept in `sent`, so a first run with no cut shows where each step
of a transfer begins."""

from __future__ import annotations

import os
import select
import threading
import tty


class UsbCable:
    def __init__(
        self, board_path: str, cut_after: int | None = None, cut_at: bytes | None = None
    ) -> None:
        self.cut_after = cut_after
        self.cut_at = cut_at
        self.sent = bytearray()
        self.pulled = threading.Event()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._board = os.open(board_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._board)
        self._thread = threading.Thread(target=self._run, daemon=True, name="usb-cable")

    def __enter__(self) -> UsbCable:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.pull()
        self._thread.join(2)

    def pull(self) -> None:
        """The cable out: the host's port reads EIO, nothing more reaches the board."""
        if self.pulled.is_set():
            return
        self.pulled.set()
        for fd in (self._master, self._slave, self._board):
            try:
                os.close(fd)
            except OSError:
                pass

    def _run(self) -> None:
        while not self.pulled.is_set():
            try:
                ready, _, _ = select.select([self._master, self._board], [], [], 0.1)
                for fd in ready:
                    data = os.read(fd, 4096)
                    if fd == self._board:
                        os.write(self._master, data)
                        continue
                    if self.cut_at is not None and self.cut_after is None:
                        seen = (self.sent[-len(self.cut_at) :] + data).find(self.cut_at)
                        if seen >= 0:  # cut right after it
                            self.cut_after = len(self.sent) - min(len(self.sent),
                                len(self.cut_at)) + seen + len(self.cut_at)  # fmt: skip
                    if self.cut_after is not None:
                        data = data[: self.cut_after - len(self.sent)]
                    self.sent += data
                    os.write(self._board, data)
                    if self.cut_after is not None and len(self.sent) >= self.cut_after:
                        self.pull()
                        return
            except (OSError, ValueError):  # pulled from the other thread
                return
