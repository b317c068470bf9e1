"""The detector bus against a hand-written RTU slave on the paced 9600-baud line (pymodbus answers
correctly or not at all; a misbehaving detector needs a slave of our own): one that answers every
request late, in order, with the reading of the moment it was asked; one that puts bytes after
each valid reply. Neither may ever be believed: the valve closes on the fault, and a stale or
garbled 55 %LEL reading never raises an alarm."""

from __future__ import annotations

import copy
import os
import select
import struct
import threading
import time

from gasguard.tools.sim.linepacer import LinePacer
from gasguard.tools.sim.vboard import VirtualBoard

from .conftest import BASE_CONFIG, KEY, open_valve


def crc16(data: bytes) -> int:
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return c


def frame(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


class HandSlave:
    """A generic-x10 detector at address 1 (FC04, %LEL x10 in register 0, state 0 in 1)."""

    def __init__(self, pacer: LinePacer, late_s: float = 0.0, trailing: bytes = b""):
        self.fd = os.open(pacer.bus_path, os.O_RDWR | os.O_NOCTTY)
        self.late_s = late_s
        self.trailing = trailing
        self.tenths = 0
        self.requests = 0
        self._stop = False
        self._out: list[tuple[float, bytes]] = []  # (when, reply): answered in order
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while not self._stop:
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if not r:
                buf = b""  # a silence ends whatever came
                continue
            try:
                buf += os.read(self.fd, 64)
            except OSError:
                return
            while len(buf) >= 8:
                req, buf = buf[:8], buf[8:]
                if req[0] != 1 or frame(req[:6]) != req:
                    buf = b""
                    break
                self.requests += 1
                body = bytes((1, 4, 4)) + struct.pack(">hH", self.tenths, 0)
                with self._lock:
                    self._out.append((time.monotonic() + self.late_s, frame(body)))

    def _write(self) -> None:
        while not self._stop:
            with self._lock:
                due = self._out[0] if self._out and self._out[0][0] <= time.monotonic() else None
                if due:
                    self._out.pop(0)
            if due is None:
                time.sleep(0.002)
                continue
            try:
                os.write(self.fd, due[1] + self.trailing)
            except OSError:
                return

    def stop(self) -> None:
        self._stop = True
        os.close(self.fd)


def _board(tmp_path, **slave):
    pacer = LinePacer(9600).start()
    s = HandSlave(pacer, **slave)
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["detectors"] = [{"address": 1, "profile": "generic-x10", "gas": "methane"}]
    cfg["bus"] = {"path": pacer.board_path}
    b = VirtualBoard(tmp_path / "flash", cfg, KEY)
    return pacer, s, b


def _stop(pacer, s, b):
    b.stop()
    s.stop()
    pacer.stopping = True


def test_a_detector_that_answers_every_request_late_faults_and_is_never_believed(tmp_path):
    pacer, s, b = _board(tmp_path)
    try:
        b.start()
        open_valve(b)  # it answers in time: healthy, the valve opens
        mark = len(b.lines)
        s.late_s = 0.3  # from now on every answer comes 300 ms after its request, in order
        t0 = time.monotonic()
        s.tenths = 550  # a 55 %LEL reading, in answers that are all late ...
        time.sleep(0.4)
        s.tenths = 0  # ... then clean air: the stale 55 must never be taken for a new answer
        b.wait_line("detector.fault det=0", 5, start=mark)
        assert time.monotonic() - t0 < 2.0 + 0.6  # stale_ms, plus the poll it is found at
        b.wait_output("valve", 0, 2)  # fault_closes_valve (the default): closed
        time.sleep(2.0)
        assert not [x for x in b.lines[mark:] if "alarm." in x], b.lines[mark:]
    finally:
        _stop(pacer, s, b)


def test_a_valid_reply_with_bytes_after_it_is_rejected(tmp_path):
    pacer, s, b = _board(tmp_path)
    try:
        b.start()
        open_valve(b)
        mark = len(b.lines)
        s.trailing = b"\x01\x04"  # two bytes after every otherwise valid reply
        s.tenths = 550
        b.wait_line("detector.fault det=0", 5, start=mark)
        b.wait_output("valve", 0, 2)
        time.sleep(1.0)
        assert not [x for x in b.lines[mark:] if "alarm." in x], b.lines[mark:]
    finally:
        _stop(pacer, s, b)
