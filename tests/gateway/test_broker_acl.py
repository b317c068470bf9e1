"""examples/mosquitto (TLS + ACL) enforced by a real mosquitto, with the real gateway and the
regulator's ingest on it: the site's stream arrives over validated TLS; a gateway writing under
another site, a regulator writing at all, anonymous and wrong-password logins, and a client that
does not trust the broker's CA are all refused."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from gasguard.tools.sim.brokers import Broker
from gasguard.tools.sim.gwrun import GatewayProcess, write_config
from gasguard.tools.sim.syndevice import SynDevice, run_tcp

from .conftest import KEYS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mosquitto"
SITE, OTHER, REGULATOR = "sh-xuhui-0042", "sh-minhang-0007", "regulator-xuhui"
PASSWORDS = {SITE: "gw-secret-1", OTHER: "gw-secret-2", REGULATOR: "reg-secret-3"}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A private CA and a broker certificate for localhost / 127.0.0.1."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=GasGuard test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.pem",
             cwd=d)  # fmt: skip


class ExampleMosquitto(Broker):
    """mosquitto running examples/mosquitto/mosquitto.conf, paths and port moved here."""

    kind = "mosquitto-acl"

    def _argv(self) -> list[str]:
        d = self.dir
        make_certs(d)
        pw = d / "gasguard.passwd"
        for user, password in PASSWORDS.items():
            flags = ["-b", "-c"] if not pw.exists() else ["-b"]
            subprocess.run(["mosquitto_passwd", *flags, str(pw), user, password], check=True)
        pw.chmod(0o600)
        shutil.copy(EXAMPLE / "gasguard.acl", d / "gasguard.acl")
        (d / "gasguard.acl").chmod(0o600)
        conf = (EXAMPLE / "mosquitto.conf").read_text()
        for a, b in (
            ("/etc/mosquitto/certs/", "%s/" % d),
            ("/etc/mosquitto/", "%s/" % d),
            ("/var/lib/mosquitto/", "%s/" % d),
            ("listener 8883", "listener %d 127.0.0.1" % self.port),
        ):
            assert a in conf, a
            conf = conf.replace(a, b)
        # the test's files are private to whoever runs it: mosquitto started as root would
        # otherwise drop to its own user and not be allowed to read them
        conf += "\nuser %s\n" % getpass.getuser()
        (d / "mosquitto.conf").write_text(conf)
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [binary, "-c", str(d / "mosquitto.conf")]


@pytest.fixture
def acl_broker():
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("openssl and mosquitto_passwd are needed (scripts/setup.sh installs them)")
    b = ExampleMosquitto().start()
    yield b
    b.stop()


def _tls(broker: Broker) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(broker.dir / "ca.pem"))


def client(broker: Broker, user: str | None, password: str | None = None, **kw) -> aiomqtt.Client:
    kw.setdefault("tls_context", _tls(broker))
    return aiomqtt.Client(
        "localhost",
        broker.port,
        username=user,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
        **kw,
    )


def test_example_acl_and_tls_are_enforced(acl_broker, tmp_path):
    b = acl_broker
    (tmp_path / "pw").write_text(PASSWORDS[SITE] + "\n")
    cfg = write_config(tmp_path / "gw", KEYS, "mqtts://localhost:%d" % b.port, site=SITE)
    text = cfg.read_text().replace(
        "[mqtt]\n",
        '[mqtt]\nusername = "%s"\npassword_file = "%s"\nca_file = "%s"\n'
        % (SITE, tmp_path / "pw", b.dir / "ca.pem"),
    )
    cfg.write_text(text)
    gw = GatewayProcess(cfg, "info").start()
    db = tmp_path / "regulator.db"
    (tmp_path / "reg-pw").write_text(PASSWORDS[REGULATOR] + "\n")
    ingest_log = tmp_path / "ingest.log"
    with open(ingest_log, "w") as out:  # the ingest, over TLS, with its read-only account
        ingest = subprocess.Popen(
            [sys.executable, "-m", "gasguard.regulator", "ingest", "--broker",
             "mqtts://localhost:%d" % b.port, "--db", str(db), "--username", REGULATOR,
             "--password-file", str(tmp_path / "reg-pw"), "--ca-file", str(b.dir / "ca.pem"),
             "--group", "acl-test-%d" % os.getpid()],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def query(sql: str) -> list:
        try:
            c = sqlite3.connect(db)
            try:
                return c.execute(sql).fetchall()
            finally:
                c.close()
        except sqlite3.OperationalError:  # no tables yet
            return []

    async def until(sql: str, pred, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while not pred(got := query(sql)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return got

    async def scenario() -> None:
        deadline = time.monotonic() + 30
        while ": subscribed as " not in ingest_log.read_text():
            assert ingest.poll() is None and time.monotonic() < deadline, ingest_log.read_text()
            await asyncio.sleep(0.05)
        # the site's gateway over TLS, publishing its devices' events under its own site
        dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
        await run_tcp(dev, "127.0.0.1", gw.tcp_port, 4, kinds=("alarm.high", "alarm.clear"))
        got = await until("SELECT count(*) FROM events", lambda r: r and r[0][0] >= 4)
        assert got[0][0] >= 4, ingest_log.read_text()
        got = await until("SELECT site, gateway, online FROM gateways", bool)
        assert got == [(SITE, "gw-1", 1)]  # the retained gateway status

        # the same gateway account writing under another site: dropped by the ACL
        async with client(b, SITE, PASSWORDS[SITE]) as c:
            await c.publish("gasguard/v1/%s/kitchen-9/events" % OTHER, b"{}", qos=1)
            await c.publish("gasguard/v1/%s/kitchen-9/events" % SITE, b"{}", qos=1)  # control
        # a regulator account writing at all: dropped
        async with client(b, REGULATOR, PASSWORDS[REGULATOR]) as c:
            await c.publish("gasguard/v1/%s/kitchen-9/events" % SITE, b"{x}", qos=1)
        await asyncio.sleep(1.5)
        # only the control arrived (and was rejected by the ingest's schema check)
        rejected = query("SELECT topic, times FROM rejected")
        assert rejected == [("gasguard/v1/%s/kitchen-9/events" % SITE, 1)], rejected

        # logins that must fail
        for user, password in ((None, None), (SITE, "wrong"), ("someone", "x")):
            with pytest.raises(aiomqtt.MqttError):
                async with client(b, user, password):
                    pass
        # a client that does not trust the private CA cannot even connect
        with pytest.raises(aiomqtt.MqttError):
            async with client(
                b, REGULATOR, PASSWORDS[REGULATOR], tls_context=ssl.create_default_context()
            ):
                pass

    try:
        asyncio.run(scenario())
    finally:
        gw.stop()
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(20)
    log = gw.log_path.read_text()
    for secret in PASSWORDS.values():
        assert secret not in log, "a password reached the gateway log"
        assert secret not in ingest_log.read_text(), "a password reached the ingest's log"
    for key in KEYS.values():
        assert key.hex() not in log, "a device key reached the gateway log"
