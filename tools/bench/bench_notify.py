"""`gasguard bench notify`: from a leak at a board's detector to the duty robot's webhook.

The real chain: the hotpot-88 main kitchen's board (the firmware in the MicroPython VM, a
simulated Modbus detector on its paced line) → its UART link → `gasguard gateway` → mosquitto
(MQTT 5) → `gasguard regulator ingest --notify-config` (the incident's first message decided in
the batch that opened it) → `gasguard regulator notify` (woken by PostgreSQL NOTIFY, or polling
SQLite) → a local HTTP server standing in for a WeCom group robot. Meanwhile the regulator
bench's background load runs: the retained heartbeats of a city of `units` units (2 devices
each, one heartbeat a device a minute), published paced by tools/bench/mqtt_flood.py.

Each sample: the valve open, the detector's reading steps to 60 %LEL (above the 50 %LEL high
set point); the latency runs from that step to the robot webhook receiving the message (both
this machine's clock). Then the gas clears and staff reset the board for the next one.
lost: alarms whose message never arrived (within 30 s); duplicates: messages received more
than once (by X-GasGuard-Message-Id): both must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gasguard.tools import human

SITE_DIR = Path(__file__).resolve().parents[2] / "examples" / "hotpot-88"
LEAK_DETECTOR, LEAK_LEL = 1, 60.0
TARGETS = {"notify_p99_ms": 1000}
KEY_ENV = "GASGUARD_BENCH_ROBOT_KEY"


class Robot:
    """A WeCom-style group robot on 127.0.0.1: each POST's arrival time kept."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str, dict]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _hook(self, request):
        from aiohttp import web

        body = await request.json()
        self.got.append((time.time(), request.headers.get("X-GasGuard-Message-Id", ""), body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", self._hook)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> Robot:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *a: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def notify_toml(robot_port: int, node: str, sqlite: bool) -> str:
    return "\n".join([
        'base_url = "http://127.0.0.1:8080"',
        "[delivery]",
        "poll_s = 0.02" if sqlite else "tick_s = 0.2",
        "[channels.duty]",
        'type = "wecom"',
        'url = "http://127.0.0.1:%d/cgi-bin/webhook/send"' % robot_port,
        'key_env = "%s"' % KEY_ENV,
        "[[contacts]]",
        'node = "%s"' % node,
        'role = "duty"',
        'channel = "duty"',
        "[escalation.high]",
        'steps = [{after = "0s", roles = ["duty"]}]',
        "",
    ])  # fmt: skip


class Service:
    """A `python -m gasguard.tools.cli ...` process; its output in a file."""

    def __init__(self, argv: list[str], log: Path, ready: str, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gasguard.tools.cli", *argv],
                                         stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while ready not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("%s did not start:\n%s" % (argv[:2], log.read_text()[-1500:]))
            time.sleep(0.05)

    def stop(self) -> None:
        from gasguard.tools.sim.brokers import stop_process

        stop_process(self.proc, 20)


class Background:
    """The regulator bench's heartbeats for a city of `units` units: every device's retained
    state once a minute, paced (one minute's worth encoded, published again and again)."""

    def __init__(self, tmp: Path, port: int, units: int) -> None:
        from gasguard.tools.bench import bench_regulator as br

        devs = br.devices_of(units, 2 * units)
        self.rate = len(devs) / 60.0
        times, t = br.Times(), int(time.time())
        msgs = br.states(br.state_template(), devs, 1, t, times)
        self.load = br.Load(tmp, "background", msgs, True)
        self.port, self.tmp = port, tmp
        self.stopping = threading.Event()
        self.pub: subprocess.Popen | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.pub = self.load.publish(self.port, rate=self.rate, ticks=self.tmp / "bg.ticks")
            self.pub.wait()

    def __enter__(self) -> Background:
        if self.load.count:
            self.thread.start()
        return self

    def __exit__(self, *a: Any) -> None:
        self.stopping.set()
        if self.pub is not None:
            self.pub.terminate()
        self.thread.join(10)


def _pcts(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    xs = sorted(xs)
    return round(statistics.median(xs), 1), round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 1)


def run(
    json_path: str | None, alarms: int = 200, units: int = 50_000,
    store_kind: str = "postgresql", log=lambda s: print(s, flush=True),
) -> dict[str, Any]:  # fmt: skip
    from gasguard.regulator import registry
    from gasguard.regulator.store import open_store
    from gasguard.tools.device import read_device_config
    from gasguard.tools.sim.brokers import Mosquitto
    from gasguard.tools.sim.gwrun import GatewayProcess, write_config
    from gasguard.tools.sim.postgres import PostgresServer
    from gasguard.tools.sim.vboard_service import VboardService

    sqlite = store_kind == "sqlite"
    out: dict[str, Any] = {"alarms": alarms, "store": store_kind, "background_units": units,
                           "cores": os.cpu_count()}  # fmt: skip
    lat: list[float] = []
    lost = 0
    env = dict(os.environ, **{KEY_ENV: "bench-robot-key"})
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gasguard-notify-")))
        broker = stack.enter_context(Mosquitto())
        if sqlite:
            url = str(tmp / "ledger.sqlite")
        else:
            url = stack.enter_context(PostgresServer(fsync=True)).create_database("regulator")
        store = open_store(url, create=True)
        stack.callback(store.close)
        registry.import_file(store, SITE_DIR / "units.csv")
        cfg, key = read_device_config(SITE_DIR / "kitchen-main.json")
        site = cfg["site"]
        (node,) = store.x("SELECT node FROM units WHERE site = ?", (site,)).fetchone()
        robot = stack.enter_context(Robot())
        conf = tmp / "notify.toml"
        conf.write_text(notify_toml(robot.port, node, sqlite), encoding="utf-8")
        ingest = Service(["regulator", "ingest", "--broker", broker.url, "--db", url,
                          "--group", "bench-notify", "--node", "bench", "--notify-config",
                          str(conf)], tmp / "ingest.log", ": subscribed as ", env)  # fmt: skip
        stack.callback(ingest.stop)
        deliver = Service(["regulator", "notify", "--db", url, "--config", str(conf)],
                          tmp / "notify.log", ": delivering", env)  # fmt: skip
        stack.callback(deliver.stop)
        svc = stack.enter_context(VboardService(cfg, key, flash=tmp / "board", heartbeat_s=5))
        gw_cfg = write_config(tmp / "gateway", {cfg["device_id"]: key}, broker.url, site=site,
                              serial=[svc.link_endpoint] if svc.link_endpoint else [],
                              heartbeat_s=5, protocol="5")  # fmt: skip
        gateway = GatewayProcess(gw_cfg, "warning").start()
        stack.callback(gateway.stop)
        b = svc.board
        b.wait_line("GASGUARD RUNNING", 30)
        hold = cfg.get("pins", {}).get("reset_hold_ms", 1000) / 1000 + 0.3
        b.reset_until_open(6, hold, wait_s=2.0, pause_s=0.5)
        bg = stack.enter_context(Background(tmp, broker.port, units))
        out["background_heartbeats_per_s"] = round(bg.rate)
        log("background: %d heartbeats/s; %d alarms to time" % (bg.rate, alarms))
        for i in range(alarms):
            seen = len(robot.got)
            t0 = time.time()
            svc.apply({"det": LEAK_DETECTOR, "lel": LEAK_LEL})
            deadline = time.monotonic() + 30
            while len(robot.got) == seen and time.monotonic() < deadline:
                time.sleep(0.002)
            if len(robot.got) > seen:
                lat.append((robot.got[seen][0] - t0) * 1000)
            else:
                lost += 1
            b.wait_output("valve", 0, 5)
            svc.apply({"det": LEAK_DETECTOR, "lel": 0.0})
            time.sleep(0.5)
            b.reset_until_open(10, hold, wait_s=2.0, pause_s=0.5)
            if (i + 1) % 10 == 0 or i + 1 == alarms:
                log("%d/%d alarms, p99 so far %s ms" % (i + 1, alarms, _pcts(lat)[1]))
        time.sleep(2)  # anything late or twice
        ids = [g[1] for g in robot.got]
        out["received"] = len(ids)
        out["duplicates"] = len(ids) - len(set(ids))
        (out["incidents"],) = store.x("SELECT count(*) FROM incidents WHERE site = ?",
                                      (site,)).fetchone()  # fmt: skip
        from gasguard.regulator.notify import outbox

        out["outbox"] = outbox.counts(store)
    out["notify_p50_ms"], out["notify_p99_ms"] = _pcts(lat)
    out["notify_max_ms"] = round(max(lat), 1) if lat else None
    out["lost"] = lost
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


def run_args(args: Any) -> dict:
    out = run(args.json, alarms=args.samples, units=args.units, store_kind=args.store)
    print(human.figures(out))
    for name, ok in checks(out):
        print("%-40s %s" % (name, "pass" if ok else "MISS"))
    return out


def checks(out: dict) -> list[tuple[str, bool]]:
    p99 = out["notify_p99_ms"]
    return [
        ("leak to robot p99 <= 1,000 ms", p99 is not None and p99 <= TARGETS["notify_p99_ms"]),
        ("0 lost", out["lost"] == 0),
        ("0 received twice", out.get("duplicates", 1) == 0),
    ]


def missed(out: dict) -> list[str]:
    return [name for name, ok in checks(out) if not ok]
