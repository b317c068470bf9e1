"""`gasguard vboard`: one virtual board with its wiring, as a service other tools can reach.

It starts the firmware (VirtualBoard), the detector bus and the link cable, then prints one JSON
line of endpoints and runs until stopped:
  repl     pty for `mpremote connect <pty> resume ...` and `gasguard flash`
  link     pty of the gateway link (config link.kind "uart"), or the gateway address it dials (tcp)
  panel    host:port of the pin panel (the GPIO feedback adapter protocol, docs in hil_tests/)
  bus      "sim": simulated detectors on a paced line, driven through `control`;
           otherwise the pty where an external detector simulator (or adapter) answers, paced
           at the config's baud rate as a real line is
  control  host:port taking JSON lines for the simulated detectors (sim bus only), e.g.
           {"det": 1, "lel": 30.0} {"det": 1, "state": "fault"} {"det": 2, "exception": 4}
           {"det": 2, "silent": true} {"corrupt": 0.01}; answered {"ok": true} or {"error": ..}

`gasguard vboard --config FILE` hands FILE to the firmware's flash byte for byte: whatever it
holds, the firmware judges it as a board would (a hostile config boots into the config-error
state); the service reads it only for its own wiring, and never writes the ptys into it.
"""

from __future__ import annotations

import copy
import json
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from gasguard.tools.sim.detsim import DetectorBus, SimDetector
from gasguard.tools.sim.linepacer import PacedCable, PtyCable
from gasguard.tools.sim.vboard import BootCrash, VirtualBoard, _field

VALVE_TRAVEL_S = 0.3  # a real valve takes 1-2 s; the virtual one is quicker to keep tests short
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def lenient(raw: bytes) -> dict:
    """What the service itself reads of a config file (its wiring), whatever the file holds:
    the firmware is the one to judge it."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _simulated(cfg: dict) -> list[SimDetector]:
    """A simulated detector for each entry that names an address and a profile it can build;
    the others are left for the firmware to refuse (or to find silent)."""
    dets = []
    entries = cfg.get("detectors")
    for d in entries if isinstance(entries, list) else []:
        addr = _field(d, "address")
        if not isinstance(addr, int) or isinstance(addr, bool) or not 1 <= addr <= 247:
            continue
        try:
            dets.append(SimDetector(addr, _field(d, "profile")))
        except (ValueError, TypeError):  # ProfileError is a ValueError
            continue
    return dets


class VboardService:
    def __init__(
        self,
        config: dict,
        key: bytes | None,
        flash: Path | None = None,
        bus: str = "sim",
        seed: int = 1,
        heartbeat_s: int | None = None,
        raw: bytes | None = None,
    ) -> None:
        """raw: the config file's bytes, for the firmware as they are; else config is written.
        key: written to key.hex (None: the firmware takes the config's key_hex itself)."""
        self.config = copy.deepcopy(config) if isinstance(config, dict) else {}
        if raw is None:
            self.config.pop("key_hex", None)  # the key goes to key.hex, as provisioning does
            if heartbeat_s is not None:
                self.config["heartbeat_s"] = heartbeat_s
        self.key = key
        self._tmp = None
        if flash is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gasguard-vboard-")
            flash = Path(self._tmp.name)
        self.flash = Path(flash)
        baud = _field(self.config, "bus", "baud", default=9600)
        baud = baud if baud in BAUDS and not isinstance(baud, bool) else 9600
        self.detectors: DetectorBus | None = None
        self.bus_line: PacedCable | None = None
        if bus == "sim":
            self.detectors = DetectorBus(_simulated(self.config), baud=baud, seed=seed)
            self.bus_path = self.detectors.board_path
            self.bus_endpoint = "sim"
        else:  # external: a cable at the configured baud rate, as a real RS-485 line
            self.bus_line = PacedCable(baud, seed)
            self.bus_path = self.bus_line.a_path
            self.bus_endpoint = self.bus_line.b_path
        kind = _field(self.config, "link", "kind", default="uart")
        self.cable: PtyCable | None = None
        self.link_endpoint: str | None = None
        link_path = None
        if "link" not in self.config and raw is None:
            self.config["link"] = {"kind": "none"}
        elif kind == "uart":
            self.cable = PtyCable()
            link_path = self.cable.a_path
            self.link_endpoint = self.cable.b_path
        elif kind == "tcp":
            self.link_endpoint = "tcp://%s:%s" % (
                _field(self.config, "link", "host"),
                _field(self.config, "link", "port", default=7700),
            )
        # a valve body answers on the position input when one is wired
        has_pos = _field(self.config, "valve", "position_pin") is not None
        self.board = VirtualBoard(
            self.flash,
            self.config,
            key,
            valve_travel_s=VALVE_TRAVEL_S if has_pos else None,
            raw=raw,
            bus_path=self.bus_path,
            link_path=link_path,
        )
        self._control: socket.socket | None = None
        self._stopping = False

    def start(self) -> VboardService:
        if self.detectors is not None:
            self.detectors.start()
        if self.bus_line is not None:
            self.bus_line.start()
        if self.cable is not None:
            self.cable.start()
        self.board.start()
        if self.detectors is not None:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(4)
            self._control = s
            threading.Thread(target=self._serve_control, daemon=True).start()
        return self

    def endpoints(self) -> dict[str, Any]:
        ctl = self._control.getsockname() if self._control is not None else None
        return {
            "device_id": self.config.get("device_id"),  # what the file says, valid or not
            "repl": self.board.repl_path,
            "link": self.link_endpoint,
            "panel": "127.0.0.1:%d" % self.board.panel_port,
            "bus": self.bus_endpoint,
            "control": "%s:%d" % ctl if ctl else None,
            "flash": str(self.flash),
        }

    # --- detector control ------------------------------------------------------------------------

    def apply(self, cmd: dict) -> None:
        bus = self.detectors
        if bus is None:
            raise ValueError("the bus is external: control the detectors there")
        if "corrupt" in cmd:
            bus.pacer.corrupt_rate = float(cmd["corrupt"])
        if "det" not in cmd:
            return
        addr = cmd["det"]
        if addr not in bus.detectors:
            raise ValueError("no detector at address %r" % addr)
        d = bus[addr]
        if "lel" in cmd or "state" in cmd:
            d.set(lel=cmd.get("lel"), state=cmd.get("state"))
        if "exception" in cmd:
            d.exception = cmd["exception"]
        if "silent" in cmd:
            bus.silence(addr, bool(cmd["silent"]))

    def _serve_control(self) -> None:
        assert self._control is not None
        while not self._stopping:
            try:
                conn, _ = self._control.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for raw in f:
                try:
                    cmd = json.loads(raw)
                    if not isinstance(cmd, dict):
                        raise ValueError("each line must be a JSON object")
                    self.apply(cmd)
                    reply: dict[str, Any] = {"ok": True}
                except (ValueError, TypeError) as e:
                    reply = {"error": str(e)}
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()

    def stop(self) -> None:
        self._stopping = True
        if self._control is not None:
            self._control.close()
        self.board.stop()
        for part in (self.detectors, self.bus_line, self.cable):
            if part is not None:
                part.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> VboardService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config_path: Path, key_path: Path | None, flash: Path | None, bus: str) -> int:
    import signal
    import sys

    try:
        raw = Path(config_path).read_bytes()
    except OSError as e:
        print("gasguard vboard: %s: cannot read (%s)" % (config_path, e.strerror), file=sys.stderr)
        return 2
    key = None  # without --key, the firmware reads the config's key_hex, as a board does
    if key_path is not None:
        try:
            key = bytes.fromhex(Path(key_path).read_text().strip())
        except (OSError, ValueError) as e:
            print("gasguard vboard: %s: not a key (%s)" % (key_path, e), file=sys.stderr)
            return 2
    svc = VboardService(lenient(raw), key, flash, bus, raw=raw)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        svc.start()
    except (BootCrash, RuntimeError) as e:
        print("gasguard vboard: %s" % e, file=sys.stderr)
        svc.stop()
        return 1
    print(json.dumps(svc.endpoints()), flush=True)
    shown = 0
    try:
        while not stop.wait(0.2):
            lines = svc.board.lines  # the board's console, for whoever watches this terminal
            for line in lines[shown:]:
                print("board | " + line, file=sys.stderr, flush=True)
            shown = len(lines)
    finally:
        svc.stop()
    return 0
