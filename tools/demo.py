"""`gasguard demo`: the Hotpot 88 site (examples/hotpot-88) on this machine.

Real parts throughout: two virtual boards run the firmware in the MicroPython VM against
simulated Modbus detectors on paced serial lines, each board's UART link reaches the gateway
process through a Python-made pty cable, the gateway publishes to an MQTT broker (the embedded
amqtt one unless --broker), and the regulator's console keeps its hazard ledger from that stream.

The script is what happens in a kitchen: staff open the gas at the start of a shift, a leak
reaches a detector, the valve closes, staff acknowledge, a reset is refused while gas is still
present, the gas clears, staff reset and the gas is back on. It ends with a summary.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gasguard.tools import exitcodes, human
from gasguard.tools.ledger import Ledger, render
from gasguard.tools.regulator import BrokerUrl, Watcher

if TYPE_CHECKING:  # the simulators load when the demo runs, not for `gasguard --help`
    from gasguard.tools.sim.brokers import Broker
    from gasguard.tools.sim.gwrun import GatewayProcess
    from gasguard.tools.sim.vboard_service import VboardService

SITE_DIR = Path(__file__).resolve().parents[1] / "examples" / "hotpot-88"
BOARDS = ("kitchen-main.json", "kitchen-back.json")
LEAK_DETECTOR = 1  # the main kitchen's detector over the wok line
LEAK_LEL = 60.0  # %LEL: above the 50 %LEL high alarm


class DemoFailed(RuntimeError):
    pass


class Unreachable(DemoFailed):
    """The --broker did not answer: exit 3, not a failed demo."""


class Regulator:
    """The console in a thread of its own (its own event loop), writing a ledger file the demo
    reads with a second connection."""

    def __init__(self, url: str, ledger_path: Path, say) -> None:
        self.url = url
        self.ledger_path = ledger_path
        self.say = say
        self.lines: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._ready = threading.Event()
        self.watcher: Watcher | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="regulator")

    def start(self) -> Regulator:
        self._thread.start()
        if not self._ready.wait(20):
            raise Unreachable("the regulator console could not subscribe at %s" % self.url)
        return self

    def _line(self, s: str) -> None:
        self.lines.append(s)
        if not s.startswith("watching"):
            self.say("regulator | " + s)

    def _run(self) -> None:
        async def main() -> None:
            ledger = Ledger(self.ledger_path)
            self.watcher = Watcher(
                BrokerUrl(self.url),
                ledger,
                mqtt="3.1.1",  # the embedded amqtt broker speaks 3.1.1
                client_id="gasguard-demo-regulator",
                on_line=self._line,
            )
            self._task = asyncio.create_task(self.watcher.run())
            await self.watcher.connected.wait()
            self._ready.set()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            finally:
                ledger.close()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def wait(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.05)
        raise DemoFailed("the regulator never saw %r within %.0f s" % (text, timeout))


class Demo:
    def __init__(self, broker_url: str | None, duration: float, ledger: Path | None) -> None:
        self.broker_url = broker_url
        self.duration = duration
        self.t0 = time.monotonic()
        self._tmp = tempfile.TemporaryDirectory(prefix="gasguard-demo-")
        self.dir = Path(self._tmp.name)
        self.kept = ledger is not None
        self.ledger_path = ledger or self.dir / "ledger.sqlite"
        self.broker: Broker | None = None
        self.boards: list[VboardService] = []
        self.gateway: GatewayProcess | None = None
        self.regulator: Regulator | None = None
        self.figures: dict[str, Any] = {}
        # a kept ledger may hold earlier runs: this run's summary counts what came after these
        self.marks = (0, 0)

    def say(self, text: str) -> None:
        print("[%5.1fs] %s" % (time.monotonic() - self.t0, text), flush=True)

    def left(self) -> float:
        left = self.duration - (time.monotonic() - self.t0)
        if left <= 0:
            raise DemoFailed("ran past --duration %.0f s" % self.duration)
        return left

    # --- the site --------------------------------------------------------------------------------

    def bring_up(self) -> None:
        from gasguard.tools.device import read_device_config
        from gasguard.tools.sim.brokers import Amqtt
        from gasguard.tools.sim.gwrun import GatewayProcess, write_config
        from gasguard.tools.sim.vboard_service import VboardService

        if self.broker_url is None:
            self.broker = Amqtt().start()
            url = self.broker.url
            self.say("broker: embedded amqtt (MQTT 3.1.1) at %s" % url)
        else:
            url = self.broker_url
            self.say("broker: %s" % url)
        keys = {}
        for name in BOARDS:
            cfg, key = read_device_config(SITE_DIR / name)
            svc = VboardService(cfg, key, flash=self.dir / cfg["device_id"], heartbeat_s=5).start()
            self.boards.append(svc)
            keys[cfg["device_id"]] = key
        site = self.boards[0].config["site"]
        gw_cfg = write_config(
            self.dir / "gateway",
            keys,
            url,
            site=site,
            gateway_id="gw-1",
            serial=[b.link_endpoint for b in self.boards if b.link_endpoint],
            heartbeat_s=5,
            protocol="3.1.1",
        )
        self.marks = _ledger_marks(self.ledger_path)
        self.regulator = Regulator(url, self.ledger_path, self.say).start()
        self.gateway = GatewayProcess(gw_cfg, "warning").start()
        self.say("gateway: site %s, %d boards on serial links" % (site, len(self.boards)))
        for b in self.boards:
            line = b.board.wait_line("GASGUARD RUNNING", min(20, self.left()))
            self.say("board: " + line.split(" heap")[0].replace("GASGUARD RUNNING ", ""))
        for b in self.boards:
            self.regulator.wait("%s device.online" % b.config["device_id"], min(20, self.left()))

    def reset_on_site(self, svc: VboardService, until_open: bool = True) -> bool:
        """A person holds the reset button. Right after a boot the detectors may not have
        answered yet: the board refuses, and they try again a moment later."""
        b = svc.board
        hold = svc.config.get("pins", {}).get("reset_hold_ms", 1000) / 1000 + 0.3
        if until_open:
            try:
                b.reset_until_open(6, hold, wait_s=2.0, pause_s=0.5)
            except TimeoutError:
                raise DemoFailed(
                    "%s: the valve never opened after a reset" % svc.config["device_id"]
                ) from None
            return True
        mark = len(b.lines)
        b.press("reset", hold)
        try:
            b.wait_output("valve", 1, 2.0)
            return True
        except TimeoutError:
            b.wait_line("reset.refused", min(3, self.left()), start=mark)
            return False

    def run(self) -> int:
        try:
            self.bring_up()
            self.shift()
            self.summary()
            return 0
        except (DemoFailed, TimeoutError, RuntimeError) as e:
            self.say("DEMO FAILED: %s" % e)
            for b in self.boards:
                print(
                    "\n".join("  %s | %s" % (b.config["device_id"], x) for x in b.board.lines[-8:])
                )
            if self.gateway is not None:
                print("  gateway log: %s" % self.gateway.log_path.read_text()[-1500:])
            return exitcodes.UNREACHABLE if isinstance(e, Unreachable) else exitcodes.FAILED
        finally:
            self.tear_down()

    def shift(self) -> None:
        assert self.regulator is not None
        main, back = self.boards
        dev = main.config["device_id"]
        self.say("staff open the gas at the start of the shift (reset on each board)")
        for b in self.boards:
            self.reset_on_site(b)
        self.say("valves open; both kitchens cooking")

        mark = len(main.board.history)
        self.say(
            "LEAK: %s in %s reads %.0f %%LEL"
            % (human.detector_in(main.config, LEAK_DETECTOR), dev, LEAK_LEL)
        )
        t_leak = time.perf_counter()
        main.apply({"det": LEAK_DETECTOR, "lel": LEAK_LEL})
        t_closed = main.board.wait_output("valve", 0, min(5, self.left()))
        self.figures["valve_close_ms"] = (t_closed - t_leak) * 1000
        self.say(
            "valve CLOSED %.0f ms after the leak reached the detector; buzzer %s, fan %s"
            % (
                self.figures["valve_close_ms"],
                "sounding" if main.board.wait_output("buzzer", 1, 2) else "?",
                "on" if main.board.wait_output("fan", 1, 2) else "?",
            )
        )
        self.regulator.wait("%s valve.closed" % dev, min(10, self.left()))
        assert back.board.outputs.get("valve") == 1, "the other kitchen's valve is untouched"

        self.say("staff press ACKNOWLEDGE: the buzzer goes quiet, the valve stays closed")
        main.board.press("ack", 0.3)
        t_ack = time.perf_counter()
        self.regulator.wait("%s ack" % dev, min(10, self.left()))
        time.sleep(max(0.0, t_ack + 1.0 - time.perf_counter()))
        # the high-alarm buzzer pulses at 4 Hz: a second without it sounding means silenced
        sounded = [t for t, p, v in main.board.history[mark:] if p == "buzzer" and v == 1]
        if sounded and sounded[-1] > t_ack + 0.2:
            raise DemoFailed("the buzzer still sounds after the acknowledge")
        self.say("buzzer silent; red lamp and valve stay as they are")

        self.say("staff try RESET while gas is still present")
        if self.reset_on_site(main, until_open=False):
            raise DemoFailed("the valve reopened with gas present")
        self.say("reset refused: the valve stays closed")

        self.say("windows open, the leak is fixed: the gas clears")
        main.apply({"det": LEAK_DETECTOR, "lel": 0.0})
        self.regulator.wait("%s alarm.clear" % dev, min(15, self.left()))

        self.say("staff hold RESET on site")
        self.reset_on_site(main)
        self.say("valve OPEN again")
        self.regulator.wait("closed (valve reset on site)", min(10, self.left()))

    def summary(self) -> None:
        db = sqlite3.connect(self.ledger_path)
        try:
            delivered = {
                dev: n
                for dev, n in db.execute(
                    "SELECT device, count(*) FROM events WHERE rowid > ? AND kind NOT IN "
                    "('device.online', 'device.offline', 'outbox.dropped') GROUP BY device",
                    (self.marks[0],),
                )
            }
        finally:
            db.close()
        ledger = Ledger(self.ledger_path)
        every = ledger.incidents()
        incidents = [i for i in every if i["incident"] > self.marks[1]]
        table = render(ledger)
        ledger.close()
        print()
        print("== summary ==")
        print("time to valve close: %.0f ms (leak on the detector -> valve output)"
              % self.figures["valve_close_ms"])  # fmt: skip
        events = []
        for b in self.boards:
            dev = b.config["device_id"]
            events.append((dev, len(b.board.events()), delivered.get(dev, 0)))
        print(human.table(("events from", "logged on the board", "in the regulator's ledger"),
                          events))  # fmt: skip
        for dev, logged, got in events:
            if got < logged:
                raise DemoFailed("%s: %d of %d events reached the regulator" % (dev, got, logged))
        print(
            "incidents in the ledger: %d%s"
            % (len(every), " (%d from this run)" % len(incidents) if self.marks[1] else "")
        )
        print(human.table(
            ("#", "device", "alarm", "peak", "valve closed", "acknowledged", "gas cleared",
             "reset", "stage"),
            ((i["incident"], "%s/%s" % (i["site"], i["device"]), i["level"],
              human.figure(i["peak_lel"], "%.0f %%LEL"),
              *(human.figure(i[k], "+%ss") for k in ("to_valve_closed_s", "to_acknowledged_s",
                                                     "to_cleared_s", "to_reset_s")),
              i["stage"]) for i in incidents),
        ))  # fmt: skip
        print(table)
        if self.kept:
            print("ledger: %s (gasguard regulator export --ledger %s)"
                  % (self.ledger_path, self.ledger_path))  # fmt: skip
        else:  # it lives in the run's temporary directory: a path would name nothing after it
            print("ledger: not kept (give --ledger FILE to keep it for gasguard regulator export)")
        print("demo complete in %.1f s" % (time.monotonic() - self.t0))
        if len(incidents) != 1 or incidents[0]["stage"] != "closed":
            raise DemoFailed("expected this run's one incident in the ledger, closed")

    def tear_down(self) -> None:
        if self.regulator is not None:
            self.regulator.stop()
        if self.gateway is not None:
            self.gateway.stop()
        for b in self.boards:
            b.stop()
        if self.broker is not None:
            self.broker.stop()
        self._tmp.cleanup()


def _ledger_marks(path: Path) -> tuple[int, int]:
    """The last event row and incident number a kept ledger holds before this run."""
    if not path.exists():
        return (0, 0)
    db = sqlite3.connect(path)
    try:
        ev = db.execute("SELECT max(rowid) FROM events").fetchone()[0]
        inc = db.execute("SELECT max(incident) FROM incidents").fetchone()[0]
    except sqlite3.DatabaseError:  # not a ledger yet: the regulator says so when it opens it
        return (0, 0)
    finally:
        db.close()
    return (ev or 0, inc or 0)


def main(broker: str | None, duration: float, ledger: Path | None) -> int:
    from gasguard.tools.sim import micropython

    try:
        micropython.find_micropython()
    except (FileNotFoundError, RuntimeError) as e:
        print("gasguard demo: %s (run bash scripts/setup.sh)" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    if broker is not None:
        try:
            BrokerUrl(broker)
        except ValueError as e:
            print("gasguard demo: %s" % e, file=sys.stderr)
            return exitcodes.BAD_INPUT
    return Demo(broker, duration, ledger).run()


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help="a whole site on this machine: leak, close, ack, reset")
    d.add_argument("--broker", help="use this MQTT broker (default: an embedded amqtt broker)")
    d.add_argument("--duration", type=float, default=60.0, help="give up after S seconds")
    d.add_argument("--ledger", type=Path, help="keep the regulator's ledger in this file")
    d.set_defaults(run=lambda args: main(args.broker, args.duration, args.ledger))
