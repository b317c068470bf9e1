"""`gasguard bench links`: many boards on TCP links at once.

N synthetic boards (default 1,000) connect to one gateway (its own process, mosquitto, the
durable path as in production), do the session handshake and heartbeat once a second, while one
more board sends high alarms (ALARMS, one every ALARM_EVERY_S). Measured after a steady phase of
`duration` seconds:

  links         boards started
  linked        boards whose link is still up with a confirmed session at the end, and that the
                gateway counts online (the smaller of the two)
  rss_mb        the gateway process's resident memory (VmRSS) at the end
  cpu_pct       the gateway process's CPU (user + system) over the steady phase, % of one core
  alarm_p99_ms  each high alarm from its frame leaving the board to the regulator's subscriber

Targets (issue 20): 1,000 of 1,000 linked, RSS <= 150 MB, alarm p99 <= 50 ms. Connections are
made at most CONNECT_AT_ONCE at a time, as boards coming up after a power cut would be spread.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gasguard.tools import human
from gasguard.tools.bench.bench_gateway import Regulator, _latencies, _pct
from gasguard.tools.sim.brokers import Mosquitto, free_port
from gasguard.tools.sim.gwrun import GatewayProcess, write_config
from gasguard.tools.sim.syndevice import SynDevice, open_link

ALARMS = 60
ALARM_EVERY_S = 0.25
CONNECT_AT_ONCE = 64
HEARTBEAT_S = 1.0


def _keys(n: int) -> dict[str, bytes]:
    return {"board-%04d" % i: (i + 1).to_bytes(4, "big") * 4 for i in range(n)}


def _proc_stat(pid: int) -> tuple[float, float]:
    """(cpu seconds, RSS MB) of a process, from /proc."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = 0.0
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


class Board:
    def __init__(self, dev: SynDevice) -> None:
        self.dev = dev
        self.up = False
        self.drops = 0

    async def run(self, port: int, gate: asyncio.Semaphore, stop: asyncio.Event) -> None:
        dev = self.dev
        while not stop.is_set():
            try:
                async with gate:
                    r, w = await open_link(dev, "127.0.0.1", port)
            except (OSError, TimeoutError, ConnectionError):
                self.drops += 1
                await asyncio.sleep(1.0)
                continue
            self.up = True
            reader = asyncio.create_task(self._read(r, w))
            try:
                while not stop.is_set() and not reader.done():
                    w.write(dev.heartbeat())
                    try:
                        await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
                    except TimeoutError:
                        pass
            finally:
                reader.cancel()
                if not stop.is_set():  # the link dropped under us: count it, connect again
                    self.up = False
                    self.drops += 1
                    w.close()

    async def _read(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            self.dev.feed(data)
            if self.dev.out:
                w.write(self.dev.take_out())


async def _alarms(dev: SynDevice, port: int) -> None:
    r, w = await open_link(dev, "127.0.0.1", port)

    async def read() -> None:
        while data := await r.read(65536):
            dev.feed(data)

    reader = asyncio.create_task(read())
    for _ in range(ALARMS):
        w.write(dev.event("alarm.high", det=0, lel=62.5)[1])
        await asyncio.sleep(ALARM_EVERY_S)
    deadline = time.monotonic() + 10
    while dev.unacked and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    reader.cancel()
    w.close()


async def _links(tmp: Path, links: int, duration: float) -> dict[str, Any]:
    keys = _keys(links + 1)
    alarm_id = "board-%04d" % links
    with Mosquitto() as broker:
        extra = "\n[links.tcp]\nhost = \"127.0.0.1\"\nport = %d\nmax_links = %d\n" % (
            free_port(), links + 100
        )  # fmt: skip
        cfg = write_config(tmp, keys, broker.url, site="bench", heartbeat_s=2 * HEARTBEAT_S)
        text = cfg.read_text()
        head, _, rest = text.partition("[links.tcp]")
        cfg.write_text(head + extra + "\n[mqtt]" + rest.split("\n[mqtt]", 1)[1])
        gw = GatewayProcess(cfg).start()
        reg = Regulator(broker.port, "bench-links")
        await reg.start()
        stop = asyncio.Event()
        try:
            gate = asyncio.Semaphore(CONNECT_AT_ONCE)
            boards = [Board(SynDevice(d, k)) for d, k in keys.items() if d != alarm_id]
            tasks = [asyncio.create_task(b.run(gw.tcp_port, gate, stop)) for b in boards]
            t_connect = time.monotonic()
            while sum(b.up for b in boards) < links and time.monotonic() - t_connect < 120:
                await asyncio.sleep(0.5)
            connect_s = time.monotonic() - t_connect
            assert gw.proc is not None
            cpu0, _ = _proc_stat(gw.proc.pid)
            t0 = time.monotonic()
            alarm = SynDevice(alarm_id, keys[alarm_id])
            await _alarms(alarm, gw.tcp_port)
            left = duration - (time.monotonic() - t0)
            if left > 0:
                await asyncio.sleep(left)
            cpu1, rss = _proc_stat(gw.proc.pid)
            wall = time.monotonic() - t0
            st = gw.status()
            linked_here = sum(1 for b in boards if b.up and b.dev.linked)
            online = sum(1 for d, s in st["devices"].items() if d != alarm_id and s["online"])
            from gasguard.protocol import cloudevents

            want = {cloudevents.event_id(alarm.device, alarm.inst, b, s) for b, s in alarm.acked}
            await reg.wait_for(want, 30)
            lat = _latencies([alarm], reg)
        finally:
            stop.set()
            await asyncio.sleep(0.2)
            for t in tasks:
                t.cancel()
            await reg.stop()
            gw.stop()
    return {
        "links": links,
        "linked": min(linked_here, online),
        "linked_by_boards": linked_here,
        "online_at_gateway": online,
        "rss_mb": round(rss, 1),
        "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "alarm_samples": len(lat),
        "alarm_p50_ms": _pct(lat, 0.5),
        "alarm_p99_ms": _pct(lat, 0.99),
        "connect_all_s": round(connect_s, 1),
        "link_drops": sum(b.drops for b in boards),
        "duration_s": round(wall, 1),
        "gateway_frames": st["frames"],
        "links_shed": st.get("links_shed"),
    }


def run(json_path: str | None, links: int = 1000, duration: float = 30.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gasguard-bench-links-") as tmp:
        out = asyncio.run(_links(Path(tmp), links, duration))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


# gasguard bench links: the run from the command line, and its targets


def run_args(args: Any) -> dict[str, Any]:
    out = run(args.json, args.links, args.duration)
    print(human.figures(out))
    return out


def missed(out: dict[str, Any]) -> list[str]:
    found = []
    if out["linked"] < out["links"]:
        found.append("%d of %d boards linked" % (out["linked"], out["links"]))
    if out["rss_mb"] > 150:
        found.append("gateway RSS above 150 MB")
    if out["alarm_p99_ms"] is None or out["alarm_p99_ms"] > 50:
        found.append("alarm p99 above 50 ms")
    return found
