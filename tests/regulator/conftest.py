"""Regulator ingest tests run the real parts: a mosquitto process, a PostgreSQL server of their
own (initdb + pg_ctl in a temporary directory, one per test session, as the `postgres` user when
the tests run as root, since PostgreSQL refuses root), SQLite files, and the ingest as a process
(`python -m gasguard.regulator ingest`)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from paho.mqtt import client as paho

from gasguard.protocol import cloudevents
from gasguard.regulator.store import open_store
from gasguard.tools.sim.brokers import Mosquitto
from gasguard.tools.sim.postgres import PostgresServer

INSTANCE = "00000000000000a1"
T0 = 1_760_000_000  # 2025-10-09: event times count up from here


@pytest.fixture(scope="session")
def postgres():
    try:
        server = PostgresServer().start()
    except RuntimeError as e:  # not installed
        pytest.fail(str(e))
    yield server
    server.stop()


_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (never `playwright install`): one for
    the session, shared by the console's browser tests, each account its own context
    (Playwright's sync API allows one such driver a thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                              args=["--no-sandbox"])  # fmt: skip
        yield b
        b.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "regulator.db")
    server = request.getfixturevalue("postgres")
    return server.create_database("t%d_%d" % (os.getpid(), next(_db_names)))


@pytest.fixture
def broker():
    with Mosquitto() as b:
        yield b


# the ingest's one-per-group lock lives in the temporary directory: this session's own, so the
# ingests of other sessions on the machine (another checkout's tests, a demo) are not in the way
LOCKS = tempfile.mkdtemp(prefix="gasguard-test-locks-")


class Ingest:
    """`python -m gasguard.regulator ingest` as a process; its output kept in a file."""

    def __init__(self, broker_url: str, db: str, *extra: str, workers: int = 1) -> None:
        self.workers = workers
        self.out = tempfile.NamedTemporaryFile(prefix="ingest-", suffix=".log", delete=False)
        self.argv = [sys.executable, "-m", "gasguard.regulator", "ingest", "--broker", broker_url,
                     "--db", db, "--workers", str(workers), *extra]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Ingest:
        self.out.truncate(0)
        self.proc = subprocess.Popen(
            self.argv, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, TMPDIR=LOCKS),
        )  # fmt: skip
        if wait:
            deadline = time.monotonic() + 30
            while self.output().count(": subscribed as ") < self.workers:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ingest did not start:\n" + self.output())
                time.sleep(0.05)
        return self

    def output(self) -> str:
        return Path(self.out.name).read_text(errors="replace")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def crash(self) -> None:
        """kill -9 the parent and every worker: a power cut."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def ingests():
    made: list[Ingest] = []

    def make(*a, **kw) -> Ingest:
        i = Ingest(*a, **kw)
        made.append(i)
        return i

    yield make
    for i in made:
        if i.running():
            i.stop()
        os.unlink(i.out.name)


class Publisher:
    """A QoS 1 MQTT 5 publisher that waits for each PUBACK: what it sent is at the broker."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.lock = threading.Lock()

    def send(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def send_many(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, p, qos=1) for t, p in messages]
        for i in infos:
            i.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker):
    p = Publisher(broker.port)
    yield p
    p.close()


def board_event(site: str, device: str, kind: str, boot: int, seq: int, *,
                inst: str = INSTANCE, det: int | None = 0, lel: float | None = None,
                t: int | None = None) -> tuple[str, bytes]:  # fmt: skip
    """One board event as the gateway publishes it: (topic, JSON bytes)."""
    import json

    body = {"id": [boot, seq], "kind": kind, "up": seq}
    if det is not None and kind.startswith("alarm"):
        body["det"] = det
    if lel is not None:
        body["lel"] = lel
    when = T0 + boot * 1000 + seq if t is None else t
    body["time"] = when
    ce = cloudevents.device_event(site, device, inst, body, when + 1)
    return cloudevents.topic_events(site, device), json.dumps(ce).encode()


def rows(db: str, sql: str, params=()) -> list[dict]:
    store = open_store(db)
    try:
        return store.rows(sql, params)
    finally:
        store.close()


def wait_rows(db: str, sql: str, pred, timeout: float = 30.0, params=()) -> list[dict]:
    """Poll a query until pred(rows) holds: the ingest commits asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = rows(db, sql, params)
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            got = []
        if pred(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out; last rows: %r" % (got[-10:],))
        time.sleep(0.1)
