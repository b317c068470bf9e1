"""Gateway tests run the real thing: mosquitto or amqtt as processes, the gateway as a process
(`python -m gasguard.gateway`), synthetic devices over TCP or a pty, a subscriber as regulator."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from gasguard.tools.sim.brokers import Amqtt, Broker, Mosquitto, free_port
from gasguard.tools.sim.gwrun import GatewayProcess, write_config

KEYS = {"kitchen-%d" % i: bytes([0x40 + i]) * 16 for i in range(1, 4)}


@pytest.fixture
def mosquitto():
    with Mosquitto(persistent=True) as b:
        yield b


@pytest.fixture
def amqtt_broker():
    with Amqtt() as b:
        yield b


class GatewayFactory:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[GatewayProcess] = []

    def config(self, broker: Broker, **kw) -> Path:
        kw.setdefault("tcp_port", free_port())
        kw.setdefault("site", "site-9")
        return write_config(self.tmp / "gw", KEYS, broker.url, **kw)

    def start(self, config: Path) -> GatewayProcess:
        gw = GatewayProcess(config, "info").start()
        self.procs.append(gw)
        return gw

    def close(self) -> None:
        for g in self.procs:
            g.stop()


@pytest.fixture
def gateways(tmp_path: Path):
    f = GatewayFactory(tmp_path)
    yield f
    f.close()


class Collector:
    """A regulator's subscriber: every message on gasguard/v1/#, in arrival order."""

    def __init__(self, port: int, protocol=aiomqtt.ProtocolVersion.V311, client_id="regulator"):
        self.port = port
        self.protocol = protocol
        self.client_id = client_id
        self.messages: list[tuple[str, dict, bool]] = []  # topic, payload, retain
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    protocol=self.protocol,
                    clean_session=False if self.protocol != aiomqtt.ProtocolVersion.V5 else None,
                ) as c:
                    await c.subscribe("gasguard/v1/#", qos=1)
                    self._ready.set()
                    async for m in c.messages:
                        self.messages.append((str(m.topic), json.loads(m.payload), m.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()

    def events(self, device: str | None = None) -> list[dict]:
        return [
            p
            for t, p, _ in self.messages
            if t.endswith("/events") and (device is None or p["data"]["device"] == device)
        ]

    async def wait(self, pred, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "regulator never saw %s; got %d messages: %s"
                    % (what, len(self.messages), [p.get("type") for _, p, _ in self.messages[-8:]])
                )
            await asyncio.sleep(0.05)


async def until(pred, timeout: float) -> bool:
    """Poll a user-visible condition until a deadline (True if it came): the gateway's counters
    move asynchronously (a delete after its PUBACK), so one read races them."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
