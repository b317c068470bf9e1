"""Detector simulator: a pymodbus RTU server with one SimDevice per detector, each built from its
protocol/ profile, behind a LinePacer. Tests and the virtual board set concentrations,
states (warm-up, fault, end of life, ...), exception responses and silence at run time."""

from __future__ import annotations

import asyncio
import struct
import threading
import time

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gasguard.protocol import profile as profiles
from gasguard.protocol import profile_parse
from gasguard.tools.sim.linepacer import LinePacer


class SimDetector:
    """The register image of one detector, computed from %LEL and a state name."""

    def __init__(self, address: int, profile: str | dict):
        self.address = address
        self.profile = profile_parse.load(profile)
        self.lel = 0.0
        self.state = "ok"
        self.exception: int | None = None  # answer every request with this exception code
        self.reads = 0
        self.writes: list[tuple[int, int, list[int]]] = []
        self.changed_at = time.perf_counter()

    # --- what a test sets ------------------------------------------------------------------------

    def set(self, lel: float | None = None, state: str | None = None) -> float:
        """Change the reading and/or state now; returns the perf_counter time of the change."""
        if lel is not None:
            self.lel = lel
        if state is not None:
            if state not in profiles.STATE_NAMES[:6]:
                raise ValueError("unknown detector state %r" % state)
            self.state = state
        self.changed_at = time.perf_counter()
        return self.changed_at

    # --- encoding: the inverse of profile decoding -----------------------------------------------

    def registers(self) -> list[int]:
        p = self.profile
        regs = [0] * p.count
        tenths = round(self.lel * 10)
        if p.rtype == 2:  # float32
            hi, lo = struct.unpack(">HH", struct.pack(">f", tenths / 10))
            if p.swap:
                hi, lo = lo, hi
            regs[p.roff] = hi
            regs[p.roff + 1] = lo
        else:
            raw = (tenths - p.add) * p.div // p.mul
            raw = max(p.raw_lo, min(p.raw_hi, raw))
            regs[p.roff] = raw & 0xFFFF
        want = profiles.STATE_NAMES.index(self.state)
        for kind, off, table, _else in p.rules:
            if kind == 0:  # enum
                for raw, st in table.items():
                    if st == (want if want in table.values() else profiles.OK):
                        regs[off] = raw
                        break
            elif kind == 1:  # bits
                for mask, st in table:
                    if st == want:
                        regs[off] |= mask
            else:  # expect
                regs[off] = table
        if self.state == "fault" and not any(
            (k == 0 and profiles.FAULT in t.values())
            or (k == 1 and any(s == profiles.FAULT for _, s in t))
            for k, _, t, _ in p.rules
        ):
            regs[p.roff] = 0xFFFF  # a profile without a fault code: an impossible reading
        return regs

    async def _action(self, fc, start, address, count, registers, values):
        if self.exception is not None:
            return ExcCodes(self.exception)
        if values is not None:
            self.writes.append((fc, address, list(values)))
            return None
        self.reads += 1
        regs = self.registers()
        p = self.profile
        for i, v in enumerate(regs):
            registers[p.start - start + i] = v
        return None

    def device(self) -> SimDevice:
        p = self.profile
        # room above the profile's block for a latched-alarm reset register
        top = p.start + p.count
        if p.reset is not None:
            top = max(top, p.reset[1] + 1)
        data = SimData(p.start, values=[0] * (top - p.start), datatype=DataType.REGISTERS)
        return SimDevice(self.address, simdata=[data], action=self._action)


class DetectorBus:
    """Detectors on one paced RS-485 line. board_path is the pty the board opens; with `port`
    the detectors answer on that serial device instead (a USB-RS485 adapter wired to a real
    board's bus), still through the pacer so bytes can be corrupted or a detector silenced."""

    def __init__(
        self,
        detectors: list[SimDetector],
        baud: int = 9600,
        seed: int = 1,
        port: str | None = None,
    ):
        self.detectors = {d.address: d for d in detectors}
        self.baud = baud
        self.pacer = LinePacer(baud, seed, board_port=port)
        self.board_path = self.pacer.board_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusSerialServer | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="detsim")
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __getitem__(self, address: int) -> SimDetector:
        return self.detectors[address]

    def silence(self, address: int, silent: bool = True) -> None:
        """Unplug (or plug back) a detector: its requests are never delivered."""
        if silent:
            self.pacer.silenced.add(address)
        else:
            self.pacer.silenced.discard(address)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
            self._ready.set()
            loop.run_forever()
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._server = ModbusSerialServer(
            [d.device() for d in self.detectors.values()],
            framer=FramerType.RTU,
            port=self.pacer.bus_path,
            baudrate=self.baud,
            ignore_missing_devices=True,
        )
        await self._server.serve_forever(background=True)

    def start(self) -> DetectorBus:
        self.pacer.start()
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("detector simulator did not start within 30 s")
        if self._error is not None:
            raise RuntimeError("detector simulator failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.pacer.stop()

    def __enter__(self) -> DetectorBus:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
