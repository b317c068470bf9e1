"""The attack report: device health ran on the wall clock. NTP stepping a site box's clock
forward (a box that booted at 1970) declared every board offline at once; a step back hid a dead
board for as long as the step. Silence is now measured on the monotonic clock; the wall clock
only stamps what is published. The clocks are injected, the machine's is left alone."""

from __future__ import annotations

import asyncio
import time

from gasguard.gateway import config as gwconfig
from gasguard.gateway.health import Health
from gasguard.gateway.service import Gateway
from gasguard.protocol import messages
from gasguard.tools.sim.gwrun import write_config
from gasguard.tools.sim.syndevice import SynDevice, open_link

from .conftest import KEYS, Collector

DETS = [{"addr": 1, "gas": "methane", "profile": "generic-x10"}]
BIRTH = messages.birth("k1", "00000000000000aa", "0.1.0", "abcd", "power", "nc", DETS)


def test_a_step_of_the_wall_clock_neither_kills_nor_hides_a_board():
    wall = [1_000.0]  # booted at 1970, no RTC
    h = Health("site-9", offline_after_s=30, clock=lambda: wall[0])
    for d in ("k1", "k2"):
        h.birth(d, 1, BIRTH)
    wall[0] = 1_800_000_000.0  # NTP steps the clock forward
    assert h.expire() == [] and h.online_count() == 2
    assert h.state("k1")["last_seen"] == 1_000.0  # published as the wall time it was seen

    mono = [500.0]
    h = Health("site-9", offline_after_s=30, clock=lambda: wall[0], monotonic=lambda: mono[0])
    h.birth("k1", 1, BIRTH)
    wall[0] -= 3600  # stepped back an hour; the board dies now
    mono[0] += 29
    assert h.expire() == []
    mono[0] += 2
    assert [d for d, _ in h.expire()] == ["k1"]  # after 31 s, not an hour and 31 s


def test_the_gateway_keeps_a_live_board_online_and_finds_a_dead_one_across_clock_steps(
    mosquitto, tmp_path
):
    cfg = gwconfig.load(
        write_config(tmp_path, KEYS, mosquitto.url, site="site-9", heartbeat_s=1)
    )  # offline after 3 missed heartbeats: 3 s
    step = [0.0]
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

    def offline(col: Collector) -> int:
        return sum(p["type"] == "gasguard.device.offline" for p in col.events("kitchen-1"))

    async def scenario():
        gw = Gateway(cfg, clock=lambda: time.time() + step[0])
        await gw.start()
        try:
            async with Collector(mosquitto.port) as col:
                r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
                beating = True

                async def heartbeats():
                    while beating:
                        w.write(dev.heartbeat())
                        await asyncio.sleep(0.8)  # within the 1 s period, past a health check

                task = asyncio.create_task(heartbeats())
                await asyncio.sleep(1)
                step[0] = 10 * 365 * 86400.0  # NTP steps the clock forward ten years
                await asyncio.sleep(2.5)
                live = (offline(col), gw.status()["devices"]["kitchen-1"]["online"])
                step[0] = -3600.0  # and back an hour past the true time; the board dies now
                beating = False
                await task
                t0 = time.monotonic()
                await col.wait(lambda: offline(col) >= 1, 15, "device.offline")
                took = time.monotonic() - t0
                w.close()
                return live, took
        finally:
            await gw.stop()

    (offline_events, online), took = asyncio.run(scenario())
    assert offline_events == 0 and online, "a clock step forward declared a live board offline"
    assert took < 5.0, "a dead board was found after %.1f s" % took
