"""Issue 20 items 4 and 5: the gateway's own state and how it ends. A damaged outbox is moved aside
and the loss reported; a full disk stops acknowledgements until space returns; what cannot be
survived exits with a sysexits code (never 0); a failing task is restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gasguard.gateway import config as gwconfig
from gasguard.gateway import statedir
from gasguard.gateway.committer import Committer
from gasguard.gateway.exits import EX_CANTCREAT, EX_IOERR, EX_OSERR, EX_SOFTWARE, Fatal
from gasguard.gateway.outbox import Item, Outbox, OutboxWorker
from gasguard.gateway.service import Gateway
from gasguard.tools.sim.brokers import Mosquitto
from gasguard.tools.sim.gwrun import write_config
from gasguard.tools.sim.syndevice import SynDevice, run_tcp

from .conftest import KEYS, Collector


def _run(config: Path, timeout: float = 15.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.gateway", "--config", str(config)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _fill(path: Path, n: int) -> None:
    ob = Outbox(path)
    ob.add([Item("k:%d" % i, "kitchen-1", "t", b'{"x": "%s"}' % (b"y" * 300)) for i in range(n)])
    ob.close()


def _garbage_middle(p: Path) -> None:
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.seek(4096 * 2)
        f.write(os.urandom(min(4096 * 4, size - 8192)))


def _truncate(p: Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2 + 100)


def _garbage_header(p: Path) -> None:
    with open(p, "r+b") as f:
        f.write(os.urandom(100))


@pytest.mark.parametrize("damage", [_garbage_middle, _truncate, _garbage_header])
def test_a_damaged_outbox_is_moved_aside_and_the_loss_reported(mosquitto, gateways, damage):
    """Item 5: a truncated database or a garbage header ended in a raw traceback; a page of
    garbage in the middle exited 0."""
    cfg = gateways.config(mosquitto)
    var = cfg.parent / "var"
    var.mkdir()
    _fill(var / "outbox.sqlite", 200)
    damage(var / "outbox.sqlite")
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
    gw = None

    async def scenario():
        nonlocal gw
        async with Collector(mosquitto.port) as col:  # before the gateway publishes the loss
            gw = gateways.start(cfg)
            await run_tcp(dev, "127.0.0.1", gw.tcp_port, 3)
            await col.wait(
                lambda: any(p["type"] == "gasguard.gateway.data_lost" for p in col.events())
                and len(col.events("kitchen-1")) >= 4
            )
            return col.events()

    evs = asyncio.run(scenario())
    assert gw is not None
    lost = next(p for p in evs if p["type"] == "gasguard.gateway.data_lost")
    assert "moved aside" in lost["data"]["detail"] and "outbox damaged" in lost["data"]["detail"]
    assert list(var.glob("outbox.sqlite.damaged-*"))
    log = gw.log_path.read_text()
    assert "Traceback" not in log and "outbox damaged: moved aside" in log


def test_a_gateway_that_lost_its_state_directory_delivers_its_boards_again(mosquitto, gateways):
    """Item 4: after the outbox was lost the gateway booted as 1 again; real boards refused its
    frames and their alarms stopped arriving (4 of 8 events, pending stuck at 8)."""
    cfg = gateways.config(mosquitto)
    gw = gateways.start(cfg)
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

    async def scenario():
        async with Collector(mosquitto.port) as col:
            await run_tcp(dev, "127.0.0.1", gw.tcp_port, 4)
            gw.kill()
            for f in (cfg.parent / "var").iterdir():
                f.unlink()  # the whole state directory is gone: identity and outbox
            gw2 = gateways.start(cfg)
            await run_tcp(dev, "127.0.0.1", gw2.tcp_port, 4)
            await col.wait(lambda: len({p["id"] for p in col.events("kitchen-1")
                                        if "seq" in p["data"]}) >= 8)  # fmt: skip
            return gw2

    gw2 = asyncio.run(scenario())
    assert gw2.status()["boot"] == 1  # it starts over; no board relies on it
    assert len(dev.acked) == 8 and dev.unacked == {}


def test_exit_codes_say_why_the_gateway_stopped(mosquitto, tmp_path):
    """Item 5: fatal errors exited 0, so restart-on-failure never restarted the gateway; a
    read-only state directory said "unable to open database file" without the path."""
    # the state directory cannot be made: a file stands where it should be
    bad = write_config(tmp_path / "a", KEYS, mosquitto.url)
    (bad.parent / "var").write_text("not a directory")
    r = _run(bad)
    assert r.returncode == EX_CANTCREAT, r.stderr
    assert str(bad.parent / "var") in r.stderr
    # a directory that cannot be written (as root permissions do not stop writes: a file
    # where a directory should be stands in for a read-only one)
    bad = write_config(tmp_path / "b", KEYS, mosquitto.url)
    bad = bad.with_name("g.toml")
    bad.write_text((bad.parent / "gateway.toml").read_text().replace('"var"', '"keys.toml/var"'))
    r = _run(bad)
    assert r.returncode == EX_CANTCREAT, r.stderr
    assert str(bad.parent / "keys.toml" / "var") in r.stderr
    # the port for boards is taken
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        bad = write_config(tmp_path / "c", KEYS, mosquitto.url, tcp_port=s.getsockname()[1])
        r = _run(bad)
    assert r.returncode == EX_OSERR, r.stderr
    # a bad config: bad input, as everywhere in the gasguard command
    bad = write_config(tmp_path / "d", KEYS, mosquitto.url, extra="[nonsense]\n")
    assert _run(bad).returncode == 2
    # SIGTERM: a clean stop, 0
    ok = write_config(tmp_path / "e", KEYS, mosquitto.url)
    p = subprocess.Popen([sys.executable, "-m", "gasguard.gateway", "--config", str(ok)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and json.loads(p.stdout.readline())["tcp_port"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_commit_that_fails_for_good_stops_the_gateway_with_74(mosquitto, tmp_path, monkeypatch):
    cfg = gwconfig.load(write_config(tmp_path, KEYS, mosquitto.url))

    def broken(self, items):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Outbox, "add", broken)
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

    async def scenario():
        gw = Gateway(cfg)
        run = asyncio.create_task(gw.run_until_signalled())
        while gw.tcp_port is None:
            await asyncio.sleep(0.05)
        send = asyncio.create_task(run_tcp(dev, "127.0.0.1", gw.tcp_port, 1))
        with pytest.raises(Fatal) as e:
            await asyncio.wait_for(run, 15)
        send.cancel()
        return e.value

    fatal = asyncio.run(scenario())
    assert fatal.code == EX_IOERR and "malformed" in fatal.message
    assert dev.acked == set()  # nothing acknowledged that was not durable


def test_a_failing_task_is_restarted_and_counted_and_a_hopeless_one_exits_70(
    mosquitto, tmp_path
):
    cfg = gwconfig.load(write_config(tmp_path, KEYS, mosquitto.url))

    async def scenario():
        gw = Gateway(cfg)
        fails = {"n": 0}
        real = gw._watch_health

        async def flaky():
            fails["n"] += 1
            if fails["n"] == 1:
                raise ValueError("a bug in the health task")
            await real()

        gw._watch_health = flaky  # type: ignore[method-assign]
        run = asyncio.create_task(gw.run_until_signalled())
        deadline = time.monotonic() + 10
        while fails["n"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        st = gw.status()
        assert not run.done()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(run, 15)
        return st

    st = asyncio.run(scenario())
    assert st["task_failures"] == {"health": 1}

    async def hopeless():
        gw = Gateway(cfg)

        async def broken():
            raise ValueError("always")

        gw._retention = broken  # type: ignore[method-assign]
        with pytest.raises(Fatal) as e:
            await asyncio.wait_for(gw.run_until_signalled(), 30)
        return e.value

    fatal = asyncio.run(hopeless())
    assert fatal.code == EX_SOFTWARE and "retention" in fatal.message


def test_a_full_disk_stops_acknowledgements_until_space_returns(tmp_path):
    """Item 5: disk full exited 0. Now the devices are not acknowledged (they keep their
    events), status says why, and commits resume when there is space."""
    ob = Outbox(tmp_path / "outbox.sqlite")
    pages = ob.db.execute("PRAGMA page_count").fetchone()[0]
    ob.db.execute("PRAGMA max_page_count = %d" % (pages + 8))
    worker = OutboxWorker(ob)
    done: list[int] = []

    async def scenario():
        c = Committer(worker, lambda rows: None)
        run = asyncio.create_task(c.run())
        big = b'{"x": "%s"}' % (b"y" * 3000)
        for i in range(40):
            c.submit([Item("e:%d" % i, "kitchen-1", "t", big)], lambda i=i: done.append(i))
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)
        blocked, acked = c.blocked, list(done)
        ob.db.execute("PRAGMA max_page_count = 1000000")  # space again
        deadline = time.monotonic() + 10
        while len(done) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        run.cancel()
        return blocked, acked, c.blocked

    blocked, acked_while_full, after = asyncio.run(scenario())
    worker.close()
    assert blocked is not None and "disk full" in blocked
    assert len(acked_while_full) < 40
    assert done == list(range(40)) and after is None  # all, in order, once space returned


def _flip_wal(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _truncate_wal(p: Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_flip_wal, _truncate_wal])
def test_a_damaged_outbox_log_that_lost_acked_events_is_reported(gateways, tmp_path, damage):
    """The attack report: events acked to a board wait in the outbox (broker down), the gateway
    loses power and the outbox's WAL is damaged or truncated. SQLite takes a bad WAL frame for
    the end of its log and passes its check: the events after it were gone, silently."""
    broker = Mosquitto(persistent=True)  # not started: the broker is down
    cfg = gateways.config(broker)
    var = cfg.parent / "var"
    gw = gateways.start(cfg)
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
    asyncio.run(run_tcp(dev, "127.0.0.1", gw.tcp_port, 200, kinds=("alarm.high",)))
    assert len(dev.acked) == 200 and gw.status()["outbox"]["depth"] >= 200
    gw.kill()  # a power cut
    damage(var / "outbox.sqlite-wal")
    with broker:  # the broker is back

        async def scenario():
            async with Collector(broker.port) as col:
                gw2 = gateways.start(cfg)
                await col.wait(
                    lambda: any(p["type"] == "gasguard.gateway.data_lost" for p in col.events()),
                    15, "gateway.data_lost",
                )
                return gw2, col.events()

        gw2, evs = asyncio.run(scenario())
        st = gw2.status()
    published = {p["data"]["seq"] for p in evs if p["data"].get("seq")}
    lost = next(p for p in evs if p["type"] == "gasguard.gateway.data_lost")
    assert len(published) < 200  # the damage did lose acked events...
    assert "outbox" in lost["data"]["detail"]  # ...and the regulator is told
    assert st["outbox"]["data_lost"]
    log = gw2.log_path.read_text()
    assert "Traceback" not in log
    assert any('"level": "error"' in x and "outbox" in x and "lost" in x for x in log.splitlines())


def test_the_outbox_high_water_mark_raises_no_false_alarm(tmp_path):
    """Restarts after a clean stop, after a crash, with everything published and deleted, and
    a first start with no mark: none reports a loss."""
    ob, lost = statedir.open_outbox(tmp_path, 1000, 3600)
    assert lost is None
    ids = ob.add([Item("k:%d" % i, "kitchen-1", "t", b"{}") for i in range(50)])
    ob.delete(ids)  # published
    ob.close()
    ob, lost = statedir.open_outbox(tmp_path, 1000, 3600)
    assert lost is None and ob.depth() == 0
    ob.add([Item("k:%d" % i, "kitchen-1", "t", b"{}") for i in range(50, 60)])
    ob2, lost = statedir.open_outbox(tmp_path, 1000, 3600)  # a crash: the first never closed
    assert lost is None and ob2.depth() == 10
    ob2.close()
    ob.close()
