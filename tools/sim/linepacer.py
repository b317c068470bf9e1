"""A virtual RS-485 line between a board and the detectors, made of two Python ptys.

Bytes cross it at the real baud rate (11 bits a character: start, 8 data, parity or second stop,
stop), so the firmware sees real bus timing. On demand the pacer corrupts, drops or delays bytes,
and it can silence a detector (its requests are never delivered: a real "no answer").
Needs no socat: the ptys are made with os.openpty.
"""

from __future__ import annotations

import os
import random
import select
import termios
import threading
import time
import tty
from collections import deque


def make_pty() -> tuple[int, int, str]:
    """A raw pty pair: (master fd, slave fd, slave path). Keep the slave fd open so the master
    never sees EIO while the other side reopens the path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class _Direction:
    def __init__(
        self, pacer: LinePacer, out_fd: int, name: str, corrupts: bool = True, paced: bool = True
    ):
        self.pacer = pacer
        self.corrupts = corrupts
        self.paced = paced  # False: the bytes already crossed a wire at the real rate
        self.out_fd = out_fd
        self.name = name
        self.queue: deque[int] = deque()
        self.cv = threading.Condition()
        self.sent = 0
        self.corrupted = 0
        self.dropped = 0

    def put(self, data: bytes) -> None:
        with self.cv:
            self.queue.extend(data)
            self.cv.notify()

    def run(self) -> None:
        p = self.pacer
        t_next = 0.0
        while not p.stopping:
            with self.cv:
                while not self.queue and not p.stopping:
                    self.cv.wait(0.2)
                if p.stopping:
                    return
                b = self.queue.popleft()
            now = time.perf_counter()
            if t_next < now:
                t_next = now + p.extra_delay_s
            if p.drop_rate and p.rng.random() < p.drop_rate:
                self.dropped += 1
                continue
            if self.corrupts and p.corrupt_rate and p.rng.random() < p.corrupt_rate:
                b ^= 1 << p.rng.randrange(8)
                self.corrupted += 1
            t_next += p.char_s if self.paced else 0.0
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                os.write(self.out_fd, bytes((b,)))
                self.sent += 1
            except OSError:
                return


def open_serial(path: str, baud: int) -> int:
    """A real serial port (a USB-RS485 adapter) opened raw at `baud`, 8N1, as a file descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, "B%d" % baud, None)
    if speed is None:
        os.close(fd)
        raise ValueError("unsupported baud rate %d" % baud)
    attrs[4] = attrs[5] = speed
    attrs[2] |= termios.CLOCAL | termios.CREAD
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


class LinePacer:
    """board_path is what the firmware opens, bus_path what the detector simulator opens.
    With board_port, the board side is that serial device (a real board wired through a
    USB-RS485 adapter, or another virtual board's bus pty) instead of a new pty."""

    def __init__(self, baud: int = 9600, seed: int = 1, board_port: str | None = None):
        self.baud = baud
        self.char_s = 11 / baud
        self.rng = random.Random(seed)
        self.corrupt_rate = 0.0  # probability a byte has one bit flipped
        self.drop_rate = 0.0  # probability a byte is lost
        self.extra_delay_s = 0.0  # added latency at the start of each burst
        self.silenced: set[int] = set()  # slave addresses whose requests are swallowed
        self.stopping = False
        if board_port is None:
            self.board_m, self._board_s, self.board_path = make_pty()
        else:
            self.board_m, self._board_s = open_serial(board_port, baud), -1
            self.board_path = board_port
        self.bus_m, self._bus_s, self.bus_path = make_pty()
        # A corrupted request fails the slave's CRC check and is ignored (real slaves resync on
        # the 3.5-character silence; pymodbus's framer would not), so requests are corrupted
        # whole, below, and swallowed: the board sees the same thing, no answer.
        # A request from a real serial port (or a virtual board's paced bus) took its wire time
        # already: it is passed on as it completes, not paced a second time.
        self.to_bus = _Direction(
            self, self.bus_m, "request", corrupts=False, paced=board_port is None
        )
        self.to_board = _Direction(self, self.board_m, "response")
        self.requests_swallowed = 0
        self.requests_corrupted = 0
        self._threads = [
            threading.Thread(target=self._read_loop, daemon=True, name="pacer-read"),
            threading.Thread(target=self.to_bus.run, daemon=True, name="pacer-req"),
            threading.Thread(target=self.to_board.run, daemon=True, name="pacer-resp"),
        ]

    def start(self) -> LinePacer:
        for t in self._threads:
            t.start()
        return self

    def _read_loop(self) -> None:
        pending = bytearray()
        last = 0.0
        while not self.stopping:
            r, _, _ = select.select([self.board_m, self.bus_m], [], [], 0.005)
            now = time.perf_counter()
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == self.bus_m:
                    self.to_board.put(data)
                else:
                    pending += data
                    last = now
            # requests: decide per frame whether the addressed detector is there
            while len(pending) >= 8 or (pending and now - last > 4 * self.char_s):
                frame = bytes(pending[:8])
                del pending[:8]
                if frame[0] in self.silenced:
                    self.requests_swallowed += 1
                    continue
                if self.corrupt_rate and any(self.rng.random() < self.corrupt_rate for _ in frame):
                    self.requests_corrupted += 1
                    continue
                self.to_bus.put(frame)

    def stop(self) -> None:
        self.stopping = True
        for d in (self.to_bus, self.to_board):
            with d.cv:
                d.cv.notify_all()
        for t in self._threads:
            t.join(timeout=2)
        for fd in (self.board_m, self._board_s, self.bus_m, self._bus_s):
            try:
                os.close(fd)
            except OSError:
                pass


class PtyCable:
    """A plain virtual serial cable (what `socat pty pty` makes): bytes written at one end come
    out of the other. For the board<->gateway link, where only the bytes matter. Fault
    injection: `unplugged` drops everything either way; `corrupt_rate` flips one bit in a byte
    with that probability."""

    def __init__(self, seed: int = 7) -> None:
        self.a_m, self._a_s, self.a_path = make_pty()
        self.b_m, self._b_s, self.b_path = make_pty()
        self.stopping = False
        self.unplugged = False
        self.corrupt_rate = 0.0
        self.corrupted = 0
        self.rng = random.Random(seed)
        self._thread = threading.Thread(target=self._run, daemon=True, name="pty-cable")

    def start(self) -> PtyCable:
        self._thread.start()
        return self

    def _run(self) -> None:
        peer = {self.a_m: self.b_m, self.b_m: self.a_m}
        while not self.stopping:
            r, _, _ = select.select(list(peer), [], [], 0.2)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                    if self.unplugged:
                        continue
                    if self.corrupt_rate:
                        data = self._corrupt(data)
                    os.write(peer[fd], data)
                except OSError:
                    pass

    def _corrupt(self, data: bytes) -> bytes:
        out = bytearray(data)
        for i in range(len(out)):
            if self.rng.random() < self.corrupt_rate:
                out[i] ^= 1 << self.rng.randrange(8)
                self.corrupted += 1
        return bytes(out)

    def stop(self) -> None:
        self.stopping = True
        self._thread.join(timeout=2)
        for fd in (self.a_m, self._a_s, self.b_m, self._b_s):
            try:
                os.close(fd)
            except OSError:
                pass


class PacedCable:
    """A serial cable at a real baud rate: two ptys whose bytes cross one character time (11
    bits) apart each way, as on a wire. For a virtual board's `--bus external`, where a tester's
    own detector simulator answers: the firmware sees the timing of a real RS-485 line (a reply
    written at once still arrives a character at a time) whoever is at the far end. Fault
    injection as on the LinePacer: corrupt_rate, drop_rate, extra_delay_s."""

    def __init__(self, baud: int = 9600, seed: int = 1) -> None:
        self.baud = baud
        self.char_s = 11 / baud
        self.rng = random.Random(seed)
        self.corrupt_rate = 0.0
        self.drop_rate = 0.0
        self.extra_delay_s = 0.0
        self.stopping = False
        self.a_m, self._a_s, self.a_path = make_pty()
        self.b_m, self._b_s, self.b_path = make_pty()
        self.to_b = _Direction(self, self.b_m, "a->b")
        self.to_a = _Direction(self, self.a_m, "b->a")
        self._threads = [
            threading.Thread(target=self._read_loop, daemon=True, name="cable-read"),
            threading.Thread(target=self.to_b.run, daemon=True, name="cable-a-b"),
            threading.Thread(target=self.to_a.run, daemon=True, name="cable-b-a"),
        ]

    def start(self) -> PacedCable:
        for t in self._threads:
            t.start()
        return self

    def _read_loop(self) -> None:
        way = {self.a_m: self.to_b, self.b_m: self.to_a}
        while not self.stopping:
            r, _, _ = select.select(list(way), [], [], 0.1)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                way[fd].put(data)

    def stop(self) -> None:
        self.stopping = True
        for d in (self.to_a, self.to_b):
            with d.cv:
                d.cv.notify_all()
        for t in self._threads:
            t.join(timeout=2)
        for fd in (self.a_m, self._a_s, self.b_m, self._b_s):
            try:
                os.close(fd)
            except OSError:
                pass
