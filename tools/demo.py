"""`gasguard demo`: the Hotpot 88 site (examples/hotpot-88) on this machine.

Real parts throughout: two virtual boards run the firmware in the MicroPython VM against
simulated Modbus detectors on paced serial lines, each board's UART link reaches the gateway
process through a Python-made pty cable, the gateway publishes to an MQTT 5 broker (a mosquitto
of its own unless --broker), and the regulator's ingest (`gasguard regulator ingest`, the same
service a city runs) stores the stream in a SQLite ledger the demo reads as the console does.

The script is what happens in a kitchen: staff open the gas at the start of a shift, a leak
reaches a detector, the valve closes, staff acknowledge, a reset is refused while gas is still
present, the gas clears, staff reset and the gas is back on. It ends with the ledger.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gasguard.gateway.config import is_loopback, split_broker_url
from gasguard.tools import exitcodes, human

if TYPE_CHECKING:  # the simulators load when the demo runs, not for `gasguard --help`
    from gasguard.tools.sim.brokers import Broker
    from gasguard.tools.sim.gwrun import GatewayProcess
    from gasguard.tools.sim.vboard_service import VboardService

SITE_DIR = Path(__file__).resolve().parents[1] / "examples" / "hotpot-88"
BOARDS = ("kitchen-main.json", "kitchen-back.json")
LEAK_DETECTOR = 1  # the main kitchen's detector over the wok line
LEAK_LEL = 60.0  # %LEL: above the 50 %LEL high alarm
INGEST_GROUP, INGEST_NODE = "gasguard-demo", "demo"


class DemoFailed(RuntimeError):
    pass


class Unreachable(DemoFailed):
    """The --broker did not answer: exit 3, not a failed demo."""


def check_broker(url: str) -> None:
    """ValueError unless url is an MQTT broker the ingest may use (plaintext on loopback only)."""
    try:
        tls, host, _ = split_broker_url(url)
    except ValueError as e:
        raise ValueError("--broker %s" % e) from None
    if not tls and not is_loopback(host):
        raise ValueError("--broker: plaintext MQTT to a broker that is not on loopback")


class Regulator:
    """The city's end: `gasguard regulator ingest` as a process writing the ledger, and what it
    stored read back as it arrives (each event once, and each incident's steps)."""

    def __init__(self, url: str, ledger: Path, log: Path, say) -> None:
        self.url, self.ledger, self.log, self.say = url, ledger, log, say
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.store: Any = None
        self.since = ""  # this run's events: ingested from now on (a kept ledger has others)
        self._cursor = ("", "")  # (ingested_at, id) of the last event read
        self._stages: dict[str, str] = {}

    def start(self) -> Regulator:
        from gasguard.regulator.store import now

        self.since = now()
        argv = [sys.executable, "-m", "gasguard.regulator", "ingest", "--broker", self.url,
                "--db", str(self.ledger), "--workers", "1", "--group", INGEST_GROUP,
                "--node", INGEST_NODE]  # fmt: skip
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while ": subscribed as " not in self.log.read_text(errors="replace"):
            code = self.proc.poll()
            if code is not None or time.monotonic() > deadline:
                text = self.log.read_text(errors="replace").strip()
                error = Unreachable if code == exitcodes.UNREACHABLE else DemoFailed
                raise error("the regulator's ingest did not start: %s" % text[-1500:])
            time.sleep(0.05)
        from gasguard.regulator.views import open_reader

        self.store = open_reader(str(self.ledger))
        self._cursor = (self.since, "")
        return self

    def poll(self) -> None:
        """Say what the ingest stored since the last look: events, then incidents' steps."""
        from gasguard.regulator import console

        rows = self.store.rows(
            "SELECT id, site, device, kind, detector, lel, time, ingested_at, payload "
            "FROM events WHERE ingested_at > ? OR (ingested_at = ? AND id > ?) "
            "ORDER BY ingested_at, id",
            (self._cursor[0], self._cursor[0], self._cursor[1]),
        )
        for r in rows:
            self._line(console.event_line(r))
            self._cursor = (r["ingested_at"], r["id"])
        if rows:
            for i in self.store.rows(
                "SELECT open_event, site, device, ordinal, stage, reset_at FROM incidents "
                "WHERE last_event IN (SELECT id FROM events WHERE ingested_at >= ?) "
                "ORDER BY opened_at",
                (self.since,),
            ):
                if self._stages.get(i["open_event"]) != i["stage"]:
                    self._stages[i["open_event"]] = i["stage"]
                    self._line(console.incident_line(i))

    def _line(self, text: str) -> None:
        self.lines.append(text)
        self.say("regulator | " + text)

    def wait(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for line in self.lines:
                if text in line:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise DemoFailed("the regulator's ingest ended: %s"
                                 % self.log.read_text(errors="replace")[-1500:])  # fmt: skip
            if time.monotonic() > deadline:
                raise DemoFailed("the regulator never saw %r within %.0f s" % (text, timeout))
            time.sleep(0.1)

    def stop(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the worker finishes its batch and leaves
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Demo:
    def __init__(self, broker_url: str | None, duration: float, ledger: Path | None,
                 web: socket.socket | None = None) -> None:  # fmt: skip
        self.web = web  # --web: the console's socket, bound before the site starts
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
        from gasguard.tools.sim.brokers import Mosquitto
        from gasguard.tools.sim.gwrun import GatewayProcess, write_config
        from gasguard.tools.sim.vboard_service import VboardService

        if self.broker_url is None:
            self.broker = Mosquitto().start()  # MQTT 5: the ingest takes shared subscriptions
            url = self.broker.url
            self.say("broker: mosquitto (MQTT 5) of the demo's own at %s" % url)
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
            protocol="5",
        )
        self.regulator = Regulator(url, self.ledger_path, self.dir / "ingest.log", self.say)
        self.regulator.start()
        where = str(self.ledger_path) if self.kept else "a SQLite ledger of this run's"
        self.say("regulator: gasguard regulator ingest into %s" % where)
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
            if self.web is not None:
                self.serve_console()
            return 0
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) while the console runs: a normal end
            self.say("stopping: console, ingest, gateway, boards and broker")
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
        from gasguard.regulator import console, views

        assert self.regulator is not None
        store, since = self.regulator.store, self.regulator.since
        delivered = {
            r["device"]: r["n"]
            for r in store.rows(
                "SELECT device, count(*) AS n FROM events WHERE ingested_at >= ? AND kind NOT IN "
                "('device.online', 'device.offline', 'outbox.dropped') GROUP BY device",
                (since,),
            )
        }
        every = store.rows("SELECT count(*) AS n FROM incidents")[0]["n"]
        at = views.now()
        incidents = [
            views.incident_row(r, at)
            for r in store.rows(
                "SELECT %s FROM incidents WHERE open_event IN "
                "(SELECT id FROM events WHERE ingested_at >= ?) ORDER BY opened_at"
                % views.INCIDENT_FIELDS,
                (since,),
            )
        ]
        ledger = console.render(views.snapshot(store, views.Filters(state="all"), limit=5))
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
            % (every, " (%d from this run)" % len(incidents) if every > len(incidents) else "")
        )
        print(human.table(
            ("#", "device", "alarm", "peak", "valve closed", "acknowledged", "gas cleared",
             "reset", "stage"),
            ((i["ordinal"], "%s/%s" % (i["site"], i["device"]), i["level"],
              human.figure(i["peak_lel"], "%.0f %%LEL"),
              *(human.figure(i[k], "+%ss") for k in ("to_valve_closed_s", "to_acknowledged_s",
                                                     "to_cleared_s", "to_reset_s")),
              i["stage"]) for i in incidents),
        ))  # fmt: skip
        print("the regulator's console on this ledger (gasguard regulator watch):")
        print(ledger)
        if self.kept:
            print("ledger: %s (gasguard regulator watch --db %s; regulator incidents --ledger %s)"
                  % (self.ledger_path, self.ledger_path, self.ledger_path))  # fmt: skip
        else:  # it lives in the run's temporary directory: a path would name nothing after it
            print("ledger: not kept (give --ledger FILE to keep it for gasguard regulator watch "
                  "and export)")  # fmt: skip
        print("demo complete in %.1f s" % (time.monotonic() - self.t0))
        if len(incidents) != 1 or incidents[0]["stage"] != "closed":
            raise DemoFailed("expected this run's one incident in the ledger, closed")

    def serve_console(self) -> None:
        """The regulator's web console on this run's ledger until Ctrl-C, the site running on:
        the unit registered (examples/hotpot-88/units.csv), its hazards raised, a login made."""
        from gasguard.regulator import compliance, hazards, sample
        from gasguard.regulator.store import now, open_store
        from gasguard.regulator.web import serving
        from gasguard.regulator.web.app import create_console

        assert self.web is not None
        store = open_store(str(self.ledger_path))
        try:
            sample.import_units(store)
            compliance.evaluate(store)
            hazards.sync(store, now())
            name, password = sample.add_demo_account(store, "gasguard demo")
        finally:
            store.close()
        role, node = sample.DEMO_ACCOUNT[1:]
        app = create_console(str(self.ledger_path), stale_minutes=5)
        print()
        print("console: %s/ (the regulator's web console on this run's ledger)"
              % serving.base_url(self.web))  # fmt: skip
        print("log in as %s with password %s: an account the demo made for this ledger, as "
              "`gasguard regulator user add --db %s --name %s --role %s --node %s` makes one"
              % (name, password, self.ledger_path if self.kept else "LEDGER", name, role, node))
        print("the site keeps running; Ctrl-C stops everything", flush=True)

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # uvicorn hands the signal back once it has stopped
        serving.server(app).run(sockets=[self.web])
        raise KeyboardInterrupt  # stopped without a signal (uvicorn's own end): the same

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


def main(broker: str | None, duration: float, ledger: Path | None, web: bool = False,
         listen: str = "127.0.0.1:8024") -> int:  # fmt: skip
    from gasguard.tools.sim import micropython

    try:
        micropython.find_micropython()
    except (FileNotFoundError, RuntimeError) as e:
        print("gasguard demo: %s (run bash scripts/setup.sh)" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    if broker is not None:
        try:
            check_broker(broker)
        except ValueError as e:
            print("gasguard demo: %s" % e, file=sys.stderr)
            return exitcodes.BAD_INPUT
    sock = None
    if web:  # the console's address is taken now: a port in use ends the demo before it starts
        from gasguard.regulator.api import split_listen
        from gasguard.regulator.web import serving

        try:
            sock = serving.bind(*split_listen(listen))
        except (ValueError, OSError) as e:
            print("gasguard demo: --listen %s: %s" % (listen, getattr(e, "strerror", None) or e),
                  file=sys.stderr)  # fmt: skip
            return exitcodes.BAD_INPUT
    try:
        return Demo(broker, duration, ledger, sock).run()
    finally:
        if sock is not None:
            sock.close()


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help="a whole site on this machine: leak, close, ack, reset")
    d.add_argument(
        "--broker", help="use this MQTT 5 broker (default: a mosquitto of the demo's own)"
    )
    d.add_argument("--duration", type=float, default=60.0, help="give up after S seconds")
    d.add_argument("--ledger", type=Path, help="keep the regulator's ledger in this file")
    d.add_argument("--web", action="store_true", help="then leave the regulator's web console "
                   "running on the ledger (it prints the address and a login) until Ctrl-C")
    d.add_argument("--listen", default="127.0.0.1:8024",
                   help="--web: the console's HOST:PORT (default 127.0.0.1:8024)")
    d.set_defaults(run=lambda args: main(args.broker, args.duration, args.ledger, args.web,
                                         args.listen))  # fmt: skip
