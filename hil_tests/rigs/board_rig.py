"""BoardRig: a real ESP32 on the bench (or anything with the same serial interfaces).

Wiring (hil_tests/README.md has the diagram and the pin table):
  --board PORT    the board's gateway-link UART (config link.kind "uart"), through a USB-UART
                  adapter. The rig speaks the link protocol as a gateway would: it reads birth,
                  heartbeats and events, acknowledges events and sends time sync. Valve state comes
                  from there.
  --bus PORT      a USB-RS485 adapter on the board's detector bus. The detector simulator answers
                  on it behind the line pacer (so bytes can be corrupted, a detector unplugged).
  --io ADDR       optional GPIO feedback adapter: "tcp:HOST:PORT" or a serial port, speaking the
                  panel protocol (board->rig "o <ms> <pin> <0|1>" and "s <pin>=<v> ...";
                  rig->board "<pin> <0|1>" to drive the ack and reset buttons). Without it the rig
                  asks the tester to press buttons and to confirm the buzzer and lamps.
  --console PORT  optional: the board's REPL (USB). Used to reboot the board (Ctrl-C, Ctrl-D).
A virtual board offers the same four interfaces (`gasguard vboard --bus external`), which is how
CI exercises this rig.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from gasguard.gateway.session import LinkSession, ack_frames
from gasguard.protocol import messages
from gasguard.tools.sim.detsim import DetectorBus, SimDetector

from .base import Rig


class PanelAdapter:
    """The GPIO feedback adapter: reads output changes, drives the buttons. Reconnects when the
    connection drops (a virtual board's panel restarts with the firmware)."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.outputs: dict[str, int] = {}
        self.cv = threading.Condition()
        self._send: Callable[[bytes], Any] | None = None
        self._stop = False
        threading.Thread(target=self._run, daemon=True, name="io-adapter").start()

    def _open(self) -> tuple[Callable[[], bytes], Callable[[bytes], Any], Callable[[], None]]:
        if self.addr.startswith("tcp:"):
            host, _, port = self.addr[4:].rpartition(":")
            s = socket.create_connection((host, int(port)), timeout=2)
            s.settimeout(None)
            f = s.makefile("rb")
            return f.readline, s.sendall, s.close
        port = serial.Serial(self.addr, 115200, timeout=None)
        return port.readline, port.write, port.close

    def _run(self) -> None:
        while not self._stop:
            try:
                readline, send, close = self._open()
            except OSError:
                time.sleep(0.1)
                continue
            self._send = send
            try:
                while not self._stop:
                    raw = readline()
                    if not raw:
                        break
                    self._line(raw.decode(errors="replace").split())
            except OSError:
                pass
            finally:
                self._send = None
                close()
                with self.cv:
                    self.outputs = {}

    def _line(self, parts: list[str]) -> None:
        with self.cv:
            if parts and parts[0] == "s":
                for kv in parts[1:]:
                    k, _, v = kv.partition("=")
                    self.outputs[k] = int(v)
            elif len(parts) == 4 and parts[0] == "o":
                self.outputs[parts[2]] = int(parts[3])
            self.cv.notify_all()

    def set_input(self, pin: str, value: int) -> None:
        deadline = time.monotonic() + 10
        while self._send is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the GPIO feedback adapter at %s is not connected" % self.addr)
            time.sleep(0.05)
        self._send(b"%s %d\n" % (pin.encode(), value))

    def wait_output(self, pin: str, value: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.outputs.get(pin) != value:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%s never became %d (adapter %s)" % (pin, value, self.addr))
                self.cv.wait(left)

    def close(self) -> None:
        self._stop = True


class BoardRig(Rig):
    name = "board"

    def __init__(
        self,
        board_port: str,
        bus_port: str,
        config: dict,
        key: bytes,
        io: str | None = None,
        console: str | None = None,
        ask: Callable[[str], str] = input,
    ) -> None:
        super().__init__()
        self.config = config
        self.device = config["device_id"]
        baud = config.get("bus", {}).get("baud", 9600)
        dets = [SimDetector(d["address"], d["profile"]) for d in config["detectors"]]
        self.bus = DetectorBus(dets, baud=baud, port=bus_port).start()
        self.session = LinkSession({self.device: key}, gateway_boot=int(time.time()))
        self.link = serial.Serial(board_port, config.get("link", {}).get("baud", 115200))
        self.link.timeout = 0.05
        self.io = PanelAdapter(io) if io else None
        self.console = console
        self.ask = ask
        self.valve = "unknown"
        self.valve_at = time.perf_counter()
        self.health: dict[str, Any] | None = None
        self._boots: set[int] = set()
        self._valve_id = (0, 0)
        self._stop = False
        self._wlock = threading.Lock()
        self._reader = threading.Thread(target=self._read_link, daemon=True, name="board-link")
        self._reader.start()

    # --- the link, as a gateway reads it ------------------------------------------------------

    def _write(self, data: bytes) -> None:
        with self._wlock:
            self.link.write(data)

    def _read_link(self) -> None:
        while not self._stop:
            try:
                data = self.link.read(512)
            except (OSError, serial.SerialException):
                if self._stop:
                    return
                time.sleep(0.05)
                continue
            if not data:
                continue
            acks = []
            msgs = self.session.feed(data)
            if self.session.replies:  # the handshake (protocol v2): challenges, nonce echoes
                self._write(self.session.take_replies())
            for m in msgs:
                if m.mtype == messages.BIRTH:  # a confirmed session's birth
                    if m.boot not in self._boots:  # births repeat until the time sync lands
                        self._boots.add(m.boot)
                        self._booted(m.body["cause"])
                elif m.mtype == messages.HEARTBEAT:
                    self.health = m.body
                    self._set_valve(m.body["valve"])
                elif m.mtype == messages.EVENT:
                    b = m.body
                    acks.append(tuple(b["id"]))
                    if "valve" in b and tuple(b["id"]) > self._valve_id:
                        self._valve_id = tuple(b["id"])  # re-sent old events are history
                        self._set_valve(b["valve"])
                    self._add_event(
                        {
                            "id": tuple(b["id"]),
                            "kind": b["kind"],
                            "det": b.get("det"),
                            "lel": b.get("lel"),
                            "detail": b.get("detail", ""),
                        }
                    )
            for f in ack_frames(self.session, self.device, acks):
                self._write(f)

    def _set_valve(self, state: str) -> None:
        with self._cv:
            if state != self.valve:
                self.valve = state
                self.valve_at = time.perf_counter()
            self._cv.notify_all()

    # --- the rig interface -----------------------------------------------------------------------

    def wait_valve(self, state: str, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.valve != state:
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e["kind"], e["detail"]) for e in self._events[-6:]]
                    raise TimeoutError(
                        "the board never reported the valve %s; last events %s" % (state, seen)
                    )
                self._cv.wait(left)
            return self.valve_at

    def wait_output(self, pin: str, value: int, timeout: float = 5.0) -> None:
        if self.io is not None:
            self.io.wait_output(pin, value, timeout)
            return
        answer = self.ask("Is the %s %s? [y/n] " % (pin, "on" if value else "off"))
        if not answer.strip().lower().startswith("y"):
            raise AssertionError("tester: %s is not %s" % (pin, "on" if value else "off"))

    def output(self, pin: str) -> int | None:
        if self.io is not None:
            return self.io.outputs.get(pin)
        answer = self.ask("Is the %s on? [y/n] " % pin)
        return 1 if answer.strip().lower().startswith("y") else 0

    def press(self, button: str, hold_s: float = 0.2) -> None:
        if self.io is None:
            self.ask("Press and hold %s for %.1f s, then press Enter " % (button.upper(), hold_s))
            return
        active = 0 if self.config.get("pins", {}).get("buttons_active_low", True) else 1
        self.io.set_input(button, active)
        time.sleep(hold_s)
        self.io.set_input(button, 1 - active)

    def reboot(self) -> None:
        """Ctrl-C stops the firmware (valve closed, console says STOPPED), Ctrl-D at the REPL
        soft-resets the board and main.py runs again."""
        if self.console is None:
            super().reboot()
        with serial.Serial(self.console, 115200, timeout=0.2) as con:
            seen = b""
            for _ in range(3):
                con.write(b"\x03")
                deadline = time.monotonic() + 3
                while b"STOPPED" not in seen and time.monotonic() < deadline:
                    seen += con.read(256)
                if b"STOPPED" in seen:
                    break
            else:
                raise AssertionError("the firmware did not stop on Ctrl-C: %r" % seen[-300:])
            time.sleep(0.3)
            con.write(b"\x04")
            seen = b""
            deadline = time.monotonic() + 15
            while b"GASGUARD RUNNING" not in seen:
                if time.monotonic() > deadline:
                    raise AssertionError("no firmware start after Ctrl-D: %r" % seen[-300:])
                seen += con.read(256)

    def close(self) -> None:
        self._stop = True
        if self.io is not None:
            self.io.close()
        self._reader.join(timeout=2)
        self.link.close()
        super().close()
