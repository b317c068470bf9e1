"""`gasguard bench fault-matrix --json FILE`: the whole chain under faults, one cell per fault.

Each cell builds a fresh site from real parts: a virtual board (the firmware in the MicroPython VM,
hil_tests/board-config.json) with simulated detectors on the paced bus, its UART link through a
pty cable to the gateway process, mosquitto, and a regulator subscriber with a persistent session.
Staff open the valve, the fault is applied, and the cell records how long the valve took to reach
its safe state (closed) against the cell's budget, then how many of the events the board logged
reached the regulator, and how many arrived more than once. A cell passes when the valve was safe
within budget and nothing was lost (duplicates are allowed on the wire: regulators dedupe by id).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt

from gasguard.tools import human
from gasguard.tools.bench.bench_gateway import _mosquitto_version
from gasguard.tools.device import read_device_config
from gasguard.tools.sim.brokers import Mosquitto
from gasguard.tools.sim.gwrun import GatewayProcess, write_config
from gasguard.tools.sim.vboard_service import VboardService

CONFIG = Path(__file__).resolve().parents[2] / "hil_tests" / "board-config.json"
LEAK_BUDGET_MS = 1000  # leak on the detector -> valve closed (alarm path p99 is ~190 ms)
FAULT_BUDGET_MS = 5000  # a silent detector: fail limit, then the stale time, then closed
EVENT = re.compile(r"^EVENT (\d+) (\d+) (\S+)")


class Subscriber:
    """The regulator's side: every event delivery on the site's topic, in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.deliveries: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-subscriber")
        self._thread.start()
        if not self.ready.wait(15):
            raise RuntimeError("the subscriber could not connect to the broker")

    def _run(self) -> None:
        async def main() -> None:
            while True:
                try:
                    async with aiomqtt.Client(
                        "127.0.0.1", self.port, identifier="fault-regulator", clean_session=False
                    ) as c:
                        await c.subscribe("gasguard/v1/+/+/events", qos=1)
                        self.ready.set()
                        async for m in c.messages:
                            self.deliveries.append(json.loads(m.payload))
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.2)

        self._task = self._loop.create_task(main())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)


class Site:
    def __init__(self, tmp: Path, broker: Mosquitto) -> None:
        cfg, key = read_device_config(CONFIG)
        self.device = cfg["device_id"]
        self.broker = broker
        # the regulator is subscribed, and its session saved, before the gateway publishes
        # anything: otherwise the boot event, or everything after a broker crash, could go out
        # before there is a subscription to deliver it to
        self.sub = Subscriber(broker.port)
        broker.save()
        self.svc = VboardService(cfg, key, flash=tmp / "flash").start()
        self.board = self.svc.board
        assert self.svc.cable is not None and self.svc.link_endpoint is not None
        self.cable = self.svc.cable
        gw_cfg = write_config(
            tmp / "gw",
            {self.device: key},
            broker.url,
            site=cfg["site"],
            serial=[self.svc.link_endpoint],
            heartbeat_s=2,
        )
        self.gw = GatewayProcess(gw_cfg, "warning").start()
        self.board.wait_line("GASGUARD RUNNING", 20)

    def close(self) -> None:
        self.sub.stop()
        self.gw.stop()
        self.svc.stop()

    # --- on site ---------------------------------------------------------------------------------

    def open_valve(self) -> None:
        self.board.reset_until_open(attempts=10, pause_s=0.5)

    def gas(self, lel: float) -> float:
        t = time.perf_counter()
        self.svc.apply({"det": 1, "lel": lel})
        return t

    def time_to_closed_ms(self, t0: float, budget_ms: float) -> float | None:
        try:
            t = self.board.wait_output("valve", 0, budget_ms / 1000 + 5)
        except TimeoutError:
            return None
        return round(max(0.0, t - t0) * 1000, 1)

    # --- the regulator's view --------------------------------------------------------------------

    def logged(self) -> set[tuple[int, int]]:
        out = set()
        for line in self.board.lines:
            m = EVENT.match(line)
            if m:
                out.add((int(m.group(1)), int(m.group(2))))
        return out

    def delivered(self) -> list[tuple[int, int]]:
        return [
            (d["data"]["boot"], d["data"]["seq"])
            for d in list(self.sub.deliveries)
            if d["data"]["device"] == self.device and "seq" in d["data"]
        ]

    def settle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logged() <= set(self.delivered()):
                return
            time.sleep(0.25)


# --- the cells -----------------------------------------------------------------------------------


def cell_broker_down(site: Site) -> dict[str, Any]:
    site.broker.kill()
    t0 = site.gas(60.0)
    ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
    site.gas(0.0)
    time.sleep(2.0)
    site.broker.start()
    site.open_valve()
    return {"time_to_safe_ms": ms, "budget_ms": LEAK_BUDGET_MS}


def cell_gateway_sigkill(site: Site) -> dict[str, Any]:
    t0 = site.gas(60.0)
    time.sleep(0.15)  # the alarm's events are on the link and in the outbox: kill now
    site.gw.kill()
    ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
    site.gas(0.0)
    time.sleep(1.0)
    site.gw.start()
    site.open_valve()
    return {"time_to_safe_ms": ms, "budget_ms": LEAK_BUDGET_MS}


def cell_power_cut_in_alarm(site: Site) -> dict[str, Any]:
    t0 = site.gas(60.0)
    ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
    mark, lines = len(site.board.history), len(site.board.lines)
    site.board.power_cycle()  # the supply drops while the alarm sounds, then returns
    site.board.wait_line("GASGUARD RUNNING", 20, start=lines)
    site.board.wait_output("valve", 0, 5)
    time.sleep(1.0)
    opened = [v for _, p, v in site.board.history[mark:] if p == "valve" and v == 1]
    still_closed = site.board.outputs.get("valve") == 0
    site.gas(0.0)
    site.open_valve()
    return {
        "time_to_safe_ms": ms if still_closed else None,
        "budget_ms": LEAK_BUDGET_MS,
        "valve_after_boot": "closed" if still_closed and not opened else "OPEN",
    }


def cell_power_cut_in_log_write(site: Site) -> dict[str, Any]:
    rng = random.Random(3)
    t0 = site.gas(60.0)
    ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
    for i in range(6):  # events being logged (alarm, clear, ...) when the power goes
        site.gas(0.0 if i % 2 == 0 else 60.0)
        time.sleep(rng.uniform(0.05, 0.4))
        lines = len(site.board.lines)
        site.board.power_cycle()
        site.board.wait_line("GASGUARD RUNNING", 20, start=lines)
    site.gas(0.0)
    time.sleep(1.0)
    site.open_valve()
    tamper = [x for x in site.board.lines if " tamper " in x]
    return {
        "time_to_safe_ms": ms,
        "budget_ms": LEAK_BUDGET_MS,
        "power_cuts": 6,
        "log_chain": "broken" if tamper else "verified",
    }


def cell_link_flapping(site: Site) -> dict[str, Any]:
    ms = None
    for i in range(4):
        site.cable.unplugged = True
        if i == 0:
            t0 = site.gas(60.0)
            ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
            site.gas(0.0)
        time.sleep(1.5)
        site.cable.unplugged = False
        time.sleep(1.5)
    site.open_valve()
    return {"time_to_safe_ms": ms, "budget_ms": LEAK_BUDGET_MS, "flaps": 4}


def cell_bus_corruption(site: Site) -> dict[str, Any]:
    site.svc.apply({"corrupt": 0.01})
    time.sleep(1.0)
    t0 = site.gas(60.0)
    ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
    site.gas(0.0)
    time.sleep(2.0)
    site.open_valve()
    site.svc.apply({"corrupt": 0.0})
    return {"time_to_safe_ms": ms, "budget_ms": LEAK_BUDGET_MS, "byte_error_rate": 0.01}


def cell_link_corruption(site: Site) -> dict[str, Any]:
    site.cable.corrupt_rate = 0.01
    t0 = site.gas(60.0)
    ms = site.time_to_closed_ms(t0, LEAK_BUDGET_MS)
    site.gas(0.0)
    time.sleep(2.0)
    site.open_valve()
    site.settle(20)  # still corrupting: the board re-sends what the gateway could not read
    flipped = site.cable.corrupted
    site.cable.corrupt_rate = 0.0
    return {
        "time_to_safe_ms": ms,
        "budget_ms": LEAK_BUDGET_MS,
        "byte_error_rate": 0.01,
        "bytes_corrupted": flipped,
    }


def cell_detector_unplugged(site: Site) -> dict[str, Any]:
    t0 = time.perf_counter()
    site.svc.apply({"det": 2, "silent": True})
    ms = site.time_to_closed_ms(t0, FAULT_BUDGET_MS)
    time.sleep(1.0)
    site.svc.apply({"det": 2, "silent": False})
    time.sleep(2.0)
    site.open_valve()
    return {"time_to_safe_ms": ms, "budget_ms": FAULT_BUDGET_MS}


CELLS = {
    "broker killed and restarted": cell_broker_down,
    "gateway SIGKILL mid-stream": cell_gateway_sigkill,
    "device power cut during an alarm": cell_power_cut_in_alarm,
    "device power cut during log writes": cell_power_cut_in_log_write,
    "device-gateway link flapping": cell_link_flapping,
    "1 % byte corruption on the detector bus": cell_bus_corruption,
    "1 % byte corruption on the link": cell_link_corruption,
    "a detector unplugged": cell_detector_unplugged,
}


def run_cell(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gasguard-fault-") as tmp:
        broker = Mosquitto(persistent=True).start()
        site = None
        try:
            site = Site(Path(tmp), broker)
            site.open_valve()
            row = {"fault": name}
            row.update(CELLS[name](site))
            site.settle()
            logged = site.logged()
            got = site.delivered()
            row["events_logged"] = len(logged)
            row["delivered_unique"] = len(logged & set(got))
            row["lost"] = len(logged - set(got))
            row["duplicates"] = len(got) - len(set(got))
            ms = row["time_to_safe_ms"]
            row["valve"] = "closed" if ms is not None else "NOT CLOSED"
            row["ok"] = bool(ms is not None and ms <= row["budget_ms"] and row["lost"] == 0)
            if row.get("valve_after_boot") == "OPEN" or row.get("log_chain") == "broken":
                row["ok"] = False
            return row
        finally:
            if site is not None:
                site.close()
            broker.stop()


def run(json_path: str | None, only: list[str] | None = None) -> dict[str, Any]:
    rows = []
    for name in CELLS:
        if only and not any(o in name for o in only):
            continue
        t = time.monotonic()
        row = run_cell(name)
        row["seconds"] = round(time.monotonic() - t, 1)
        rows.append(row)
        print(_row(row), file=sys.stderr, flush=True)
    out = {
        "runtime": "firmware in MicroPython 1.29 unix port (-X heapsize=110k), gateway on CPython "
        "%s, mosquitto %s" % (sys.version.split()[0], _mosquitto_version(Mosquitto().binary)),
        "cells": rows,
        "all_ok": all(r["ok"] for r in rows),
    }
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


def _row(r: dict[str, Any]) -> str:
    return "%-42s valve %-10s %7s ms (budget %5d)  events %3d delivered %3d lost %d dup %d  %s" % (
        r["fault"],
        r["valve"],
        human.figure(r["time_to_safe_ms"]),
        r["budget_ms"],
        r["events_logged"],
        r["delivered_unique"],
        r["lost"],
        r["duplicates"],
        "ok" if r["ok"] else "FAILED",
    )


def table(out: dict[str, Any]) -> str:
    return human.table(
        ("fault", "valve", "to safe ms", "budget ms", "events", "delivered", "lost", "dup", ""),
        (
            (r["fault"], r["valve"], human.figure(r["time_to_safe_ms"]), r["budget_ms"],
             r["events_logged"], r["delivered_unique"], r["lost"], r["duplicates"],
             "ok" if r["ok"] else "FAILED")
            for r in out["cells"]
        ),
    )  # fmt: skip


# gasguard bench fault-matrix: the run from the command line; every cell must hold


def run_args(args: Any) -> dict[str, Any]:
    return run(args.json, args.only)


def missed(out: dict[str, Any]) -> list[str]:
    return [r["fault"] for r in out["cells"] if not r["ok"]]
