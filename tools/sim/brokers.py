"""MQTT brokers for the demo, the tests and the benchmarks: a real mosquitto process, and the
embedded amqtt broker (pure Python, MQTT 3.1.1) in a process of its own so it can be stopped,
killed and restarted like a real one.

`python -m gasguard.tools.sim.brokers amqtt PORT` runs the amqtt broker alone.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def stop_process(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within timeout seconds."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError("nothing listens on %s:%d" % (host, port)) from None
            time.sleep(0.05)


class Broker:
    """A broker process on 127.0.0.1:port. stop() is a clean shutdown, kill() a crash;
    start() again brings it back on the same port."""

    kind = "broker"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="gasguard-%s-" % self.kind)
        self.dir = Path(self._dir.name)

    @property
    def url(self) -> str:
        return "mqtt://127.0.0.1:%d" % self.port

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Broker:
        log = open(self.dir / "broker.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_port(self.port, 15)
        except TimeoutError:
            self.kill()
            raise RuntimeError(
                "%s did not start: %s" % (self.kind, (self.dir / "broker.log").read_text()[-2000:])
            ) from None
        return self

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mosquitto(Broker):
    kind = "mosquitto"

    def __init__(
        self, port: int | None = None, extra_conf: str = "", persistent: bool = False
    ) -> None:
        super().__init__(port)
        self.extra_conf = extra_conf
        self.persistent = persistent  # sessions and queued messages survive a clean restart
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def _argv(self) -> list[str]:
        if self.persistent:
            # started as root, mosquitto drops to its own user: it must be able to write its
            # database here (the temporary directory is 0700 root, and saving used to fail)
            self.dir.chmod(0o777)
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            "listener %d 127.0.0.1\n" % self.port
            + ("allow_anonymous true\n" if "allow_anonymous" not in self.extra_conf else "")
            + (
                # saved every second, so a session survives a crash (kill -9) too
                "persistence true\npersistence_location %s/\nautosave_interval 1\n" % self.dir
                if self.persistent
                else "persistence false\n"
            )
            + "max_inflight_messages 0\nmax_queued_messages 0\n"
            + self.extra_conf
        )
        return [self.binary, "-c", str(conf)]

    def save(self, timeout: float = 5.0) -> None:
        """Write the persistence database now (SIGUSR1) and wait until it is written: the
        sessions so far then survive a crash, not only those older than the last autosave."""
        assert self.persistent and self.proc is not None
        log = self.dir / "broker.log"
        saves = log.read_text().count("Saving in-memory database")
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while True:
            text = log.read_text()
            if "Error saving" in text:
                raise RuntimeError("mosquitto could not save its database: " + text[-500:])
            # the line is logged before the write: the database file's rename ends it
            if (
                text.count("Saving in-memory database") > saves
                and not (self.dir / "mosquitto.db.new").exists()
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("mosquitto did not save its database")
            time.sleep(0.05)


class Amqtt(Broker):
    kind = "amqtt"

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "gasguard.tools.sim.brokers", "amqtt", str(self.port)]


async def _serve_amqtt(port: int) -> None:
    import logging

    from amqtt.broker import Broker as AmqttBroker

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d" % port}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = AmqttBroker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "amqtt":
        asyncio.run(_serve_amqtt(int(sys.argv[2])))
    else:
        print("usage: python -m gasguard.tools.sim.brokers amqtt PORT", file=sys.stderr)
        sys.exit(2)
