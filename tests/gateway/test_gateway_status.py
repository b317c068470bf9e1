"""The gateway's retained status carries its counts (outbox depth, refused frames, dead letters,
boards online) and is published again when they change, at most once per mqtt.status_every_s,
behind the alarms; the last will still says offline. The pump on its own with a connection that
records what it is given (the order), then the real gateway process against real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time

import jsonschema

from gasguard.gateway import schemas
from gasguard.gateway.config import MqttConfig
from gasguard.gateway.outbox import ALARM, ROUTINE, Outbox, OutboxWorker, Row
from gasguard.gateway.publisher import Publisher
from gasguard.gateway.pump import Pump
from gasguard.tools.sim.syndevice import SynDevice, run_tcp

from .conftest import KEYS, Collector

STATUS = jsonschema.Draft202012Validator(schemas.load("gateway-status.schema.json"))
STATUS_TOPIC = "gasguard/v1/site-9/gateway/gw-1/status"


class Recording:
    """A connection that records each publish (mid, topic, retain) and acknowledges on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, bool]] = []
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_ack = None

    async def attach(self, on_ack) -> None:
        self.on_ack = on_ack

    def detach(self) -> None:
        self.on_ack = None

    def publish(self, topic: str, payload: bytes, retain: bool) -> int:
        self.sent.append((len(self.sent) + 1, topic, retain))
        return len(self.sent)

    def flush(self) -> None:
        pass

    def ack(self, topic: str) -> None:
        mid = next(m for m, t, _ in self.sent if t == topic)
        assert self.on_ack is not None and self.on_ack(mid, None)

    def topics(self) -> list[str]:
        return [t for _, t, _ in self.sent]


def _row(i: int, dev: str, priority: int) -> Row:
    return Row(i, "%s:%d" % (dev, i), dev, "gasguard/v1/site-9/%s/events" % dev, b"{}",
               time.time(), priority)  # fmt: skip


def test_the_status_goes_behind_waiting_alarms_in_a_slot_of_its_own(tmp_path):
    """With the window full of routine rows and alarms waiting for the reserve, a due status
    waits until the last alarm has gone, then goes after it though the window is still full;
    counts that have not changed are not published again."""
    counts = {"devices_online": 2, "outbox": 0, "refused": 0}

    async def scenario():
        cfg = MqttConfig(host="127.0.0.1", port=1, tls=False, window=2, status_every_s=3600)
        worker = OutboxWorker(Outbox(tmp_path / "outbox.sqlite"))
        pub = Publisher(cfg, "site-9", "gw-1", "0.1.0", worker, lambda everything: {},
                        lambda: dict(counts))  # fmt: skip
        pub.receive_maximum = 8  # reserve 2 (alarms may use 1 of it), window 2
        pub.online_status()  # what a connect publishes
        conn = Recording()
        pump = Pump(pub, conn)
        task = asyncio.create_task(pump.run())
        await asyncio.sleep(0.1)
        pub.committed([_row(1, "r1", ROUTINE), _row(2, "r2", ROUTINE)])  # the window full
        await asyncio.sleep(0.05)
        # of three alarms one fits in the reserve, two wait
        pub.committed([_row(3, "a1", ALARM), _row(4, "a2", ALARM), _row(5, "a3", ALARM)])
        counts["outbox"] = 5
        await asyncio.sleep(0.05)
        pump._status_tick()  # the period is over
        await asyncio.sleep(0.05)
        held = conn.topics()
        for dev in ("a1", "a2"):
            conn.ack("gasguard/v1/site-9/%s/events" % dev)
            await asyncio.sleep(0.05)
        after = list(conn.sent)
        in_flight = len(pump.inflight)
        conn.ack(STATUS_TOPIC)
        counts["outbox"] = 3
        await asyncio.sleep(0.05)
        pump._status_tick()
        await asyncio.sleep(0.05)
        again = len(conn.sent)
        pump._status_tick()  # nothing changed since: nothing sent
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        worker.close()
        return held, after, in_flight, again, len(conn.sent), pub

    held, after, in_flight, again, last, pub = asyncio.run(scenario())
    assert STATUS_TOPIC not in held  # an alarm waits: the status waits behind it
    assert [t.split("/")[3] for _, t, _ in after[:5]] == ["r1", "r2", "a1", "a2", "a3"]
    assert after[5][1:] == (STATUS_TOPIC, True) and len(after) == 6  # after the last alarm
    assert in_flight == 3  # r1, r2, a3: the window full, yet the status went
    assert again == 7 and last == 7  # counts changed: again; unchanged: not
    assert pub.status_sent == {"devices_online": 2, "outbox": 3, "refused": 0, "dead_letters": 0}


class SlowHop:
    """A TCP hop to the broker that holds what the broker sends for `delay` seconds: PUBACKs
    come late, so a window of one drains the outbox slowly while the connection stays up."""

    def __init__(self, target: int, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.url = ""

    async def start(self) -> SlowHop:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.url = "mqtt://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        loop = asyncio.get_running_loop()

        def later(data: bytes) -> None:
            if not w.is_closing():
                w.write(data)

        async def up() -> None:  # the gateway's publishes go at once
            while data := await r.read(65536):
                uw.write(data)
            uw.close()  # the gateway is gone: the broker sees the line drop

        async def down() -> None:
            while data := await ur.read(65536):
                loop.call_later(self.delay, later, data)
            loop.call_later(self.delay, w.close)

        with contextlib.suppress(asyncio.CancelledError):  # the test's loop ending
            await asyncio.gather(up(), down(), return_exceptions=True)


def _statuses(col: Collector) -> list[dict]:
    return [p for t, p, _ in col.messages if t == STATUS_TOPIC]


def test_the_status_follows_the_outbox_rate_limited_and_the_will_still_says_offline(
    mosquitto, gateways
):
    """A board's 1,000 events wait in the outbox behind late PUBACKs: statuses say so while the
    connection stays up, at most one a second, until the outbox is empty (acknowledged rows
    leave it in batches of up to 512); the board online and a wrong-key board's refused births
    are counted; killed, the gateway's will says offline."""

    async def scenario():
        hop = await SlowHop(mosquitto.port, 0.15).start()
        gw = gateways.start(gateways.config(hop, status_every_s=1))
        async with Collector(mosquitto.port) as col:
            await col.wait(lambda: _statuses(col), what="the status at connect")
            bad = SynDevice("kitchen-2", b"\x5a" * 16)  # not kitchen-2's key: "auth"
            _, w = await asyncio.open_connection("127.0.0.1", gw.tcp_port)
            w.write(bad.birth() + bad.birth())
            dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
            await run_tcp(dev, "127.0.0.1", gw.tcp_port, 1000, kinds=("selftest",))
            await col.wait(lambda: _statuses(col)[-1]["data"]["outbox"] == 0
                           and _statuses(col)[-1]["data"]["refused"] == 2
                           and len([s for s in _statuses(col) if s["data"]["outbox"]]) >= 2,
                           30, "the outbox drained in the statuses")  # fmt: skip
            connects = gw.status()["broker"]["connects"]
            w.close()
            gw.kill()  # no goodbye: the broker publishes the will
            await col.wait(lambda: _statuses(col)[-1]["data"]["status"] == "offline", 10,
                           "the last will")  # fmt: skip
            return _statuses(col), connects

    statuses, connects = asyncio.run(scenario())
    for s in statuses:
        STATUS.validate(s)
    online, will = statuses[:-1], statuses[-1]
    assert connects == 1  # every status below came on one connection
    assert all(s["data"]["status"] == "online" for s in online)
    depths = [s["data"]["outbox"] for s in online]
    assert depths[0] == 0 and max(depths) >= 100 and depths[-1] == 0, depths
    assert depths[depths.index(max(depths)):] == sorted(depths[depths.index(max(depths)):],
                                                        reverse=True)  # fmt: skip
    assert online[-1]["data"]["devices_online"] == 1  # kept fresh, not the 0 of the connect
    assert online[-1]["data"]["dead_letters"] == 0
    times = [_seconds(s["time"]) for s in online]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.95, gaps  # at most one a period
    # the will, made at connect, carries no counts: they would be stale when it goes
    assert will["data"]["devices_online"] == 0 and "outbox" not in will["data"]


def _seconds(t: str) -> float:
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
