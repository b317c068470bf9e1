"""`gasguard bench gateway-throughput` and `gasguard bench recovery`.

Both run the real pieces: mosquitto, the gateway as its own process (`gasguard gateway`, SQLite
outbox with synchronous=FULL), synthetic devices on TCP links speaking the signed link protocol,
and a regulator subscriber counting what arrives. Devices and subscriber share this process.

gateway-throughput: devices send as fast as their ack windows allow; events_per_s is events
delivered to the subscriber divided by the time from the first send to the last delivery (the
durable path end to end: acked to the device only after commit, deleted only after PUBACK).
Then, in the same run, the naive baseline: one aiomqtt client publishing the same payloads,
awaiting each QoS 1 PUBACK before the next. alarm_p99_ms: during a second phase at the measured
durable rate minus 10 %, an extra device sends an alarm every 20 ms; the latency is from its
frame leaving the device to the subscriber receiving the CloudEvent.

recovery: devices send at a steady rate; the broker is stopped for outage_s, then started again
(with its persistent sessions, so the subscriber's QoS 1 subscription survives, as on a
regulator's broker); the bench waits until every acknowledged event has arrived.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gasguard.gateway.publisher import dumps
from gasguard.protocol import cloudevents, messages
from gasguard.tools.brokers import Mosquitto, free_port
from gasguard.tools.gwrun import GatewayProcess, write_config
from gasguard.tools.syndevice import SynDevice, run_tcp


class Regulator:
    """The regulator's side, in a process of its own (paho, threaded loop) so that counting
    deliveries costs the measured gateway as little CPU as possible. It records the first
    arrival per CloudEvents id, duplicates, and order violations among first arrivals."""

    def __init__(self, port: int, client_id: str = "bench-regulator") -> None:
        self.port = port
        self.client_id = client_id
        self.first: dict[str, float] = {}
        self.duplicates = 0
        self.order_violations = 0
        self.last_seq: dict[tuple[str, int], int] = {}
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gasguard.tools.bench_gateway", "subscribe"]
            + [str(self.port), self.client_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError("the regulator subscriber did not start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            t, ce_id, dev, boot, seq = line.split()
            with self._lock:
                if ce_id in self.first:
                    self.duplicates += 1
                    continue
                self.first[ce_id] = float(t)
                key = (dev, int(boot))
                if int(seq) <= self.last_seq.get(key, 0):
                    self.order_violations += 1
                self.last_seq[key] = max(int(seq), self.last_seq.get(key, 0))

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if ids <= self.first.keys():
                    return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def _subscribe(port: int, client_id: str) -> None:
    """Child process: print one line per event message, 'monotonic id device boot seq'."""
    import paho.mqtt.client as mqtt

    out = sys.stdout
    ready = threading.Event()

    def on_connect(c, userdata, flags, rc, props=None):
        c.subscribe("gasguard/v1/+/+/events", qos=1)

    def on_subscribe(c, userdata, mid, rcs, props=None):
        ready.set()

    def on_message(c, userdata, m):
        now = time.monotonic()
        ce = json.loads(m.payload)
        d = ce["data"]
        if "seq" in d:
            out.write("%.6f %s %s %d %d\n" % (now, ce["id"], d["device"], d["boot"], d["seq"]))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.reconnect_delay_set(0.05, 0.2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.wait(10)
    out.write("ready\n")
    out.flush()
    try:
        while True:
            time.sleep(0.02)
            out.flush()
    except KeyboardInterrupt:
        pass


def _ids(devs: list[SynDevice]) -> set[str]:
    return {"%s:%d:%d" % (d.device, b, s) for d in devs for b, s in d.acked}


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
                dumps(cloudevents.device_event(site, dev, body, now)),
            )
        )
    reg = Regulator(broker.port, "bench-naive")
    await reg.start()
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-naive-pub") as c:
            t0 = time.monotonic()
            for topic, payload in payloads:
                await c.publish(topic, payload, qos=1)
        want = {"bench-%02d:9:%d" % (i % devices, i // devices + 1) for i in range(events)}
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
            n_alarms = 200
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
            lat = sorted(
                (reg.first["%s:%d:%d" % (alarm_dev, b, s)] - alarm.sent_at[(b, s)]) * 1000
                for b, s in alarm.acked
                if "%s:%d:%d" % (alarm_dev, b, s) in reg.first
            )
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
        "alarm_p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
        "alarm_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
        "lost": lost,
        "duplicates": reg.duplicates,
        "gateway_frames": st["frames"],
        "gateway_publish_latency_ms": st["publish_latency_ms"],
        "gateway_commit_ms": st["outbox"]["commit_ms"],
    }


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


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "subscribe":
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        _subscribe(int(sys.argv[2]), sys.argv[3])
