"""`gasguard bench gateway-throughput` and `gasguard bench recovery`.

Both run the real pieces: mosquitto, the gateway as its own process (`gasguard gateway`, SQLite
outbox with synchronous=FULL), synthetic devices on TCP links speaking the signed link protocol,
and a regulator subscriber counting what arrives. Devices and subscriber share this process.

gateway-throughput: devices send as fast as their ack windows allow; events_per_s is events
delivered to the subscriber divided by the time from the first send to the last delivery (the
durable path end to end: acked to the device only after commit, deleted only after PUBACK).
Then, in the same run, the naive baseline: one aiomqtt client publishing the same payloads,
awaiting each QoS 1 PUBACK before the next. alarm_p99_ms: during a second phase at the measured
durable rate minus 10 %, an extra device sends a high alarm every 20 ms (500 of them); the
latency is from its frame leaving the device to the subscriber receiving the CloudEvent. Half of
the other devices' events are low alarms, which an urgent high alarm goes ahead of: their
latency is reported too (background_p50_ms, background_p99_ms).

recovery: devices send at a steady rate; the broker is stopped for outage_s, then started again
(with its persistent sessions, so the subscriber's QoS 1 subscription survives, as on a
regulator's broker); the bench waits until every acknowledged event has arrived.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from gasguard.gateway.publisher import dumps
from gasguard.protocol import cloudevents, messages
from gasguard.tools import human
from gasguard.tools.sim.brokers import Mosquitto, free_port, stop_process
from gasguard.tools.sim.gwrun import GatewayProcess, write_config
from gasguard.tools.sim.syndevice import SynDevice, run_tcp


class Regulator:
    """The regulator's side: mosquitto_sub (C, a process of its own) subscribed at QoS 1 with a
    persistent session, writing one line per message, 'unix-time payload', to a file. Counting
    deliveries this way costs the measured gateway almost no CPU on the shared machine (a paho
    subscriber in Python took ~40 us of CPU per event, more than the broker); lines are parsed
    only once enough have arrived. It records the first arrival per CloudEvents id (on the
    monotonic clock the devices use), duplicates, and order violations among first arrivals."""

    def __init__(self, port: int, client_id: str = "bench-regulator") -> None:
        self.port = port
        self.client_id = client_id
        self.first: dict[str, float] = {}
        self.duplicates = 0
        self.order_violations = 0
        self.last_seq: dict[tuple[str, str | None, int], int] = {}
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="gasguard-regulator-")
        self._out = Path(self._dir.name) / "messages.txt"
        self._parsed = 0  # bytes of the file parsed
        self._counted = 0  # bytes of the file counted, up to the last complete line
        self._unparsed = 0  # lines counted, not yet parsed
        self._clock = 0.0  # monotonic minus unix time

    async def start(self) -> None:
        sub, pub = shutil.which("mosquitto_sub"), shutil.which("mosquitto_pub")
        if sub is None or pub is None:
            raise RuntimeError("mosquitto_sub/mosquitto_pub not found: install mosquitto-clients")
        self._clock = time.monotonic() - time.time()
        addr = ["-h", "127.0.0.1", "-p", str(self.port), "-q", "1"]
        with open(self._out, "wb") as out:
            self.proc = subprocess.Popen(
                [sub, *addr, "-i", self.client_id, "-c", "-t", "gasguard/v1/+/+/events"]
                + ["-F", "%U %p"],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
        # mosquitto_sub does not say when it has subscribed: it has once a probe arrives
        probe = ["-t", "gasguard/v1/bench/probe/events", "-m", "{}"]
        for _ in range(100):
            p = await asyncio.create_subprocess_exec(pub, *addr, *probe)  # not blocking the loop
            await p.wait()
            await asyncio.sleep(0.1)
            if self._out.stat().st_size:
                return
        raise RuntimeError("the regulator subscriber did not start")

    def _count(self) -> None:
        with open(self._out, "rb") as f:
            f.seek(self._counted)
            data = f.read()
        n = data.rfind(b"\n") + 1
        self._unparsed += data.count(b"\n", 0, n)
        self._counted += n

    def _parse(self) -> None:
        with open(self._out, "rb") as f:
            f.seek(self._parsed)
            data = f.read(self._counted - self._parsed)
        self._parsed, self._unparsed = self._counted, 0
        for line in data.splitlines():
            t, payload = line.split(b" ", 1)
            ce = json.loads(payload)
            d = ce.get("data", {})
            if "seq" not in d:  # the probe, and the gateway's own events
                continue
            ce_id = ce["id"]
            if ce_id in self.first:
                self.duplicates += 1
                continue
            self.first[ce_id] = float(t) + self._clock
            key = (d["device"], d.get("instance"), d["boot"])
            if d["seq"] <= self.last_seq.get(key, 0):
                self.order_violations += 1
            self.last_seq[key] = max(d["seq"], self.last_seq.get(key, 0))

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        missing = len(ids - self.first.keys())
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self._count()
            if self._unparsed >= missing:  # enough lines to hold them all: look
                self._parse()
                missing = len(ids - self.first.keys())
        self._count()
        self._parse()

    async def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
            self.proc = None
        self._count()
        self._parse()
        self._dir.cleanup()


def _ids(devs: list[SynDevice]) -> set[str]:
    return {cloudevents.event_id(d.device, d.inst, b, s) for d in devs for b, s in d.acked}


NAIVE_INST = "00000000000000aa"


def _keys(n: int) -> dict[str, bytes]:
    return {"bench-%02d" % i: bytes([i + 1]) * 16 for i in range(n)}


async def _baseline(broker: Mosquitto, events: int) -> float:
    """The naive publisher: one aiomqtt client sending the same CloudEvents, each QoS 1 publish
    awaited before the next; events per second as the regulator receives them."""
    import aiomqtt

    site, devices = "naive", 10
    payloads = []
    now = time.time()
    for i in range(events):
        dev = "bench-%02d" % (i % devices)
        body = messages.event(9, i // devices + 1, "alarm.low", 60, lel=25.0, det=0)
        payloads.append(
            (
                cloudevents.topic_events(site, dev),
                dumps(cloudevents.device_event(site, dev, NAIVE_INST, body, now)),
            )
        )
    reg = Regulator(broker.port, "bench-naive")
    await reg.start()
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-naive-pub") as c:
            t0 = time.monotonic()
            for topic, payload in payloads:
                await c.publish(topic, payload, qos=1)
        want = {
            cloudevents.event_id("bench-%02d" % (i % devices), NAIVE_INST, 9, i // devices + 1)
            for i in range(events)
        }
        await reg.wait_for(want, 300)
        got = want & reg.first.keys()
        return len(got) / (max(reg.first[i] for i in got) - t0)
    finally:
        await reg.stop()


async def _throughput(tmp: Path, devices: int, per_device: int) -> dict[str, Any]:
    keys = _keys(devices + 1)
    alarm_dev = "bench-%02d" % devices
    with Mosquitto() as broker:
        cfg = write_config(tmp, keys, broker.url, site="bench", tcp_port=free_port())
        gw = GatewayProcess(cfg).start()
        reg = Regulator(broker.port)
        await reg.start()
        try:
            # phase 1: saturation
            devs = [SynDevice(d, k) for d, k in keys.items() if d != alarm_dev]
            for d in devs:
                d.prepare(per_device)
            t0 = time.monotonic()
            await asyncio.gather(*[run_tcp(d, "127.0.0.1", gw.tcp_port, window=256) for d in devs])
            want = _ids(devs)
            await reg.wait_for(want, 120)
            t_last = max(reg.first[i] for i in want if i in reg.first)
            events = devices * per_device
            rate = len(want & reg.first.keys()) / (t_last - t0)
            lost = len(want - reg.first.keys())
            # phase 2: alarm latency under 90 % of that load
            load = rate * 0.9
            devs2 = [SynDevice(d, k, boot=2) for d, k in keys.items() if d != alarm_dev]
            alarm = SynDevice(alarm_dev, keys[alarm_dev], boot=2)
            n_alarms = 500  # p99 is then the 5th-worst sample, not the 2nd
            duration = n_alarms * 0.02
            per_dev_rate = load / len(devs2)
            for d in devs2:
                d.prepare(int(per_dev_rate * duration))
            alarm.prepare(n_alarms, ("alarm.high",))
            sends = [
                run_tcp(d, "127.0.0.1", gw.tcp_port, rate=per_dev_rate, window=256) for d in devs2
            ]
            sends.append(run_tcp(alarm, "127.0.0.1", gw.tcp_port, rate=50.0, window=64))
            await asyncio.gather(*sends)
            want2 = _ids([*devs2, alarm])
            await reg.wait_for(want2, 120)
            lost += len(want2 - reg.first.keys())
            lat = _latencies([alarm], reg)
            background = _latencies(devs2, reg)  # their low alarms wait behind the urgent ones
            st = gw.status()
        finally:
            await reg.stop()
            gw.stop()
        base = await _baseline(broker, min(events, 10_000))
    return {
        "broker": "mosquitto %s" % _mosquitto_version(broker.binary),
        "devices": devices,
        "events": events,
        "events_per_s": round(rate),
        "baseline_events_per_s": round(base),
        "ratio": round(rate / base, 2),
        "alarm_load_events_per_s": round(load),
        "alarm_samples": len(lat),
        "alarm_p50_ms": _pct(lat, 0.5),
        "alarm_p99_ms": _pct(lat, 0.99),
        "background_p50_ms": _pct(background, 0.5),
        "background_p99_ms": _pct(background, 0.99),
        "lost": lost,
        "duplicates": reg.duplicates,
        "gateway_frames": st["frames"],
        "gateway_publish_latency_ms": st["publish_latency_ms"],
        "gateway_commit_ms": st["outbox"]["commit_ms"],
    }


def _latencies(devs: list[SynDevice], reg: Regulator) -> list[float]:
    """ms from each acknowledged event's frame leaving its device to the regulator, sorted."""
    return sorted(
        (reg.first[k] - d.sent_at[(b, s)]) * 1000
        for d in devs
        for b, s in d.acked
        if (k := cloudevents.event_id(d.device, d.inst, b, s)) in reg.first
    )


def _pct(xs: list[float], q: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(len(xs) * q))], 1) if xs else None


def _mosquitto_version(binary: str) -> str:
    import subprocess

    r = subprocess.run([binary, "-h"], capture_output=True, text=True)
    first = (r.stdout or r.stderr).splitlines()[0] if (r.stdout or r.stderr) else ""
    return first.replace("mosquitto version ", "").strip() or "unknown"


async def _recovery(tmp: Path, devices: int, rate: float, outage_s: float) -> dict[str, Any]:
    keys = _keys(devices)
    with Mosquitto(persistent=True) as broker:
        cfg = write_config(tmp, keys, broker.url, site="bench", tcp_port=free_port())
        gw = GatewayProcess(cfg).start()
        reg = Regulator(broker.port, "bench-recovery")
        await reg.start()
        try:
            devs = [SynDevice(d, k) for d, k in keys.items()]
            total = 3 * outage_s  # before, during and after the outage
            per = int(rate / devices * total)
            send = asyncio.gather(
                *[run_tcp(d, "127.0.0.1", gw.tcp_port, per, rate / devices, 256) for d in devs]
            )
            await asyncio.sleep(outage_s)
            broker.stop()
            await asyncio.sleep(outage_s)
            backlog_start = gw.status()["outbox"]["depth"]
            broker.start()
            t_back = time.monotonic()
            await send
            want = _ids(devs)
            await reg.wait_for(want, 300)
            # drain: the backlog held at the broker's return, over the time to deliver it
            late = sorted(reg.first[i] for i in want if i in reg.first and reg.first[i] > t_back)
            drain_s = (late[min(len(late) - 1, backlog_start)] - t_back) if late else None
        finally:
            await reg.stop()
            gw.stop()
    sent = sum(d.event_seq for d in devs)
    got = want & reg.first.keys()
    return {
        "broker": "mosquitto %s" % _mosquitto_version(broker.binary),
        "devices": devices,
        "rate_events_per_s": rate,
        "outage_s": outage_s,
        "sent": sent,
        "acked": len(want),
        "delivered_unique": len(got),
        "lost": sent - len(got),
        "duplicates": reg.duplicates,
        "order_violations": reg.order_violations,
        "backlog_at_return": backlog_start,
        "drain_events_per_s": round(backlog_start / drain_s) if drain_s else None,
    }


def throughput(json_path: str | None, devices: int = 20, per_device: int = 2500) -> dict:
    with tempfile.TemporaryDirectory(prefix="gasguard-bench-") as tmp:
        out = asyncio.run(_throughput(Path(tmp), devices, per_device))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


def recovery(
    json_path: str | None, devices: int = 10, rate: float = 1000.0, outage_s: float = 10.0
) -> dict:
    with tempfile.TemporaryDirectory(prefix="gasguard-bench-") as tmp:
        out = asyncio.run(_recovery(Path(tmp), devices, rate, outage_s))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


# gasguard bench gateway-throughput and recovery: the runs from the command line, and their targets


def throughput_args(args: Any) -> dict:
    out = throughput(args.json)
    print(human.figures(out))
    return out


def throughput_missed(out: dict) -> list[str]:
    found = []
    if out["events_per_s"] < 10_000:
        found.append("durable throughput below 10,000 events/s")
    if out["ratio"] < 2.5:
        found.append("less than 2.5 times the naive baseline")
    if out["alarm_p99_ms"] is None or out["alarm_p99_ms"] > 50:
        found.append("alarm p99 above 50 ms under load")
    if out["lost"]:
        found.append("events lost")
    return found


def recovery_args(args: Any) -> dict:
    out = recovery(args.json, outage_s=args.outage)
    print(human.figures(out))
    return out


def recovery_missed(out: dict) -> list[str]:
    found = []
    if out["lost"] or out["order_violations"]:
        found.append("events lost or out of order")
    if out["drain_events_per_s"] is None or out["drain_events_per_s"] < 5000:
        found.append("backlog drained below 5,000 events/s from the broker's return")
    return found
