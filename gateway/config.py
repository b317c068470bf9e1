"""Gateway configuration: one TOML file plus the key file it names, checked before anything runs.

Every refusal names the field and the reason (ConfigError). Secrets (device keys, the MQTT
password) are kept out of repr() so they cannot reach a log line by accident.

    [gateway]
    site = "site-9"                 # the regulator's site id (topic level)
    id = "gw-1"
    keys = "keys.toml"              # [keys] device-id = "hex key", relative to this file
    state_dir = "var"               # outbox.sqlite lives here
    heartbeat_s = 10                # the devices' heartbeat period
    missed_heartbeats = 3           # offline after this many periods without a frame

    [[links.serial]]                # zero or more RS-485 / USB lines
    port = "/dev/ttyUSB0"
    baud = 115200

    [links.tcp]                     # optional listener for Wi-Fi boards
    host = "0.0.0.0"
    port = 7700
    backlog = 4096                  # listen backlog (the kernel caps it at net.core.somaxconn)
    max_links = 2000                # connections at most; past it, idle and unauthenticated
                                    # ones are shed first, a known board always gets in
    hello_s = 5                     # a new connection must bring a valid frame within this

    [mqtt]
    url = "mqtts://broker.example.cn:8883"   # mqtt:// only on loopback (or insecure_plaintext)
    protocol = "5"                  # or "3.1.1"
    client_id = "gasguard-site-9-gw-1"
    username = "site-9"
    password_file = "mqtt.pass"     # or the GASGUARD_MQTT_PASSWORD environment variable
    ca_file = "ca.pem"              # default: the system trust store
    cert_file = "gw.pem"            # client certificate (optional)
    key_file = "gw.key"
    window = 64                     # QoS 1 publishes in flight (MQTT 5: within the broker's
                                    # Receive Maximum, alarms keep a quarter of it up to 16)
    reconnect_max_s = 1.0           # reconnect: at once, then backoff with jitter up to this
    status_every_s = 30             # the retained status is published again when its counts
                                    # (outbox, refused, dead letters, devices online) changed,
                                    # looked at this often: at most once per period

    [outbox]
    max_events = 1000000
    max_age_days = 30

    [status]
    listen = "127.0.0.1:7780"       # GET /status (JSON, `gasguard gateway status`), GET /metrics
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import files

IDENT = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")
PASSWORD_ENV = "GASGUARD_MQTT_PASSWORD"


class ConfigError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class SerialLink:
    port: str
    baud: int = 115200


@dataclass(frozen=True)
class TcpListen:
    host: str
    port: int
    backlog: int = 4096  # 1,000 boards reconnecting at once after a gateway restart
    max_links: int = 2000  # open device connections at most (see LinkLimits)
    hello_s: float = 5.0  # a new connection must deliver a valid frame within this


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    tls: bool
    protocol: str = "5"
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    window: int = 64
    reconnect_max_s: float = 1.0
    status_every_s: float = 30.0

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("mqtts" if self.tls else "mqtt", self.host, self.port)


@dataclass(frozen=True)
class GatewayConfig:
    site: str
    gateway_id: str
    keys: dict[str, bytes] = field(repr=False)
    state_dir: Path
    mqtt: MqttConfig
    serial: tuple[SerialLink, ...] = ()
    tcp: TcpListen | None = None
    heartbeat_s: float = 10.0
    missed_heartbeats: int = 3
    outbox_max_events: int = 1_000_000
    outbox_max_age_s: float = 30 * 86400.0
    status: TcpListen | None = None

    @property
    def offline_after_s(self) -> float:
        return self.heartbeat_s * self.missed_heartbeats


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _get(table: dict, name: str, path: str, kinds: tuple, default: Any = ..., check=None) -> Any:
    where = "%s.%s" % (path, name) if path else name
    if name not in table:
        if default is ...:
            raise ConfigError(where, "missing")
        return default
    v = table[name]
    if isinstance(v, bool) and bool not in kinds:
        raise ConfigError(where, "must not be true/false")
    if not isinstance(v, kinds):
        raise ConfigError(where, "must be %s" % " or ".join(k.__name__ for k in kinds))
    if check is not None:
        reason = check(v)
        if reason:
            raise ConfigError(where, reason)
    return v


def _range(lo: float, hi: float):
    return lambda v: None if lo <= v <= hi else "must be %s..%s" % (lo, hi)


def _ident(v: str) -> str | None:
    return None if IDENT.match(v) else "must be 1-32 of A-Z a-z 0-9 _ . : -"


def _no_extra(table: dict, allowed: tuple[str, ...], path: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError("%s.%s" % (path, k) if path else k, "unknown setting")


def _host_port(v: str, where: str) -> TcpListen:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(where, "must be HOST:PORT")
    return TcpListen(host.strip("[]"), int(port))


MAX_FILE_BYTES = 4 * 1024 * 1024  # a config or keys file for 1,000 boards is well under 1 MB


def read_small_file(path: Path, field: str) -> str:
    """A regular file's text, bounded: a FIFO, a device (/dev/zero) or a huge file named as a
    config would hang the start or exhaust memory. Raises ConfigError naming field."""
    try:
        raw = files.read_regular(path, MAX_FILE_BYTES)
    except files.Refused as e:
        raise ConfigError(field, "%s: %s" % (path, e)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(field, "%s is not UTF-8 text" % path) from None


def load_keys(path: Path) -> dict[str, bytes]:
    """[keys] device-id = "hex" (16..64 bytes each)."""
    try:
        data = tomllib.loads(read_small_file(path, "gateway.keys"))
    except RecursionError:
        raise ConfigError("gateway.keys", "%s is nested too deeply" % path) from None
    except OSError as e:
        raise ConfigError("gateway.keys", "cannot read %s (%s)" % (path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("gateway.keys", "%s is not TOML (%s)" % (path, e)) from None
    table = data.get("keys")
    if not isinstance(table, dict) or not table:
        raise ConfigError("keys", '%s needs a [keys] table with device-id = "hex"' % path)
    keys = {}
    for dev, hexkey in table.items():
        where = "keys.%s" % dev
        if not IDENT.match(dev):
            raise ConfigError(where, "device id must be 1-32 of A-Z a-z 0-9 _ . : -")
        if not isinstance(hexkey, str):
            raise ConfigError(where, "must be a hex string")
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            raise ConfigError(where, "is not hex") from None  # never echo the key itself
        if not 16 <= len(key) <= 64:
            raise ConfigError(where, "must be 16..64 bytes, not %d" % len(key))
        keys[dev] = key
    return keys


def split_broker_url(url: str) -> tuple[bool, str, int]:
    """mqtt[s]://HOST[:PORT] -> (tls, host, port); ValueError says what is wrong."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError("must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    tls = u.scheme == "mqtts"
    try:
        return tls, u.hostname, u.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError("bad port") from None


def _mqtt(t: dict, base: Path, site: str, gw: str, files: bool = True) -> MqttConfig:
    p = "mqtt"
    _no_extra(
        t,
        (
            "url", "protocol", "client_id", "username", "password_file", "ca_file", "cert_file",
            "key_file", "keepalive", "window", "insecure_plaintext", "reconnect_max_s",
            "status_every_s",
        ),
        p,
    )  # fmt: skip
    url = _get(t, "url", p, (str,))
    try:
        tls, host, port = split_broker_url(url)
    except ValueError as e:
        raise ConfigError("mqtt.url", str(e)) from None
    plaintext_ok = _get(t, "insecure_plaintext", p, (bool,), False)
    if not tls and not is_loopback(host) and not plaintext_ok:
        raise ConfigError(
            "mqtt.url",
            "plaintext MQTT to a broker that is not on loopback; use mqtts:// (TLS with "
            "certificate validation) or set mqtt.insecure_plaintext = true",
        )
    proto = str(_get(t, "protocol", p, (str, int, float), "5"))
    if proto not in ("5", "3.1.1"):
        raise ConfigError("mqtt.protocol", 'must be "5" or "3.1.1"')

    def path_of(name: str) -> Path | None:
        v = _get(t, name, p, (str,), None)
        if v is None:
            return None
        f = (base / v).resolve()
        if files and not f.is_file():
            raise ConfigError("mqtt." + name, "no such file %s" % f)
        return f

    password = os.environ.get(PASSWORD_ENV)
    pw_file = path_of("password_file")
    if password is None and pw_file is not None and files:
        password = pw_file.read_text().strip()
    cert, key = path_of("cert_file"), path_of("key_file")
    if (cert is None) != (key is None):
        raise ConfigError("mqtt.cert_file", "a client certificate needs cert_file and key_file")
    if (cert or path_of("ca_file")) and not tls:
        raise ConfigError("mqtt.url", "certificates are set but the url is not mqtts://")
    return MqttConfig(
        host=host,
        port=port,
        tls=tls,
        protocol=proto,
        client_id=_get(t, "client_id", p, (str,), "gasguard-%s-%s" % (site, gw)),
        username=_get(t, "username", p, (str,), None),
        password=password,
        ca_file=path_of("ca_file"),
        cert_file=cert,
        key_file=key,
        keepalive=_get(t, "keepalive", p, (int,), 30, _range(5, 3600)),
        window=_get(t, "window", p, (int,), 64, _range(1, 65535)),
        reconnect_max_s=float(
            _get(t, "reconnect_max_s", p, (int, float), 1.0, _range(0.1, 300))
        ),
        status_every_s=float(
            _get(t, "status_every_s", p, (int, float), 30.0, _range(1, 3600))
        ),
    )


def parse(data: dict, base: Path, files: bool = True) -> GatewayConfig:
    """The gateway's config from its TOML. files=False checks it away from the site box (config
    check on an installer's laptop): the MQTT password, CA and certificate files it names are the
    box's and are not looked for; the keys file is read all the same."""
    _no_extra(data, ("gateway", "links", "mqtt", "outbox", "status"), "")
    g = _get(data, "gateway", "", (dict,))
    _no_extra(
        g, ("site", "id", "keys", "state_dir", "heartbeat_s", "missed_heartbeats"), "gateway"
    )
    site = _get(g, "site", "gateway", (str,), check=_ident)
    gw = _get(g, "id", "gateway", (str,), check=_ident)
    keys = load_keys(base / _get(g, "keys", "gateway", (str,)))
    links = _get(data, "links", "", (dict,), {})
    _no_extra(links, ("serial", "tcp"), "links")
    serial = []
    for i, s in enumerate(_get(links, "serial", "links", (list,), [])):
        p = "links.serial[%d]" % i
        if not isinstance(s, dict):
            raise ConfigError(p, "must be a table")
        _no_extra(s, ("port", "baud"), p)
        serial.append(
            SerialLink(
                _get(s, "port", p, (str,)),
                _get(s, "baud", p, (int,), 115200, _range(1200, 3_000_000)),
            )
        )
    tcp = None
    if "tcp" in links:
        t = _get(links, "tcp", "links", (dict,))
        _no_extra(t, ("host", "port", "backlog", "max_links", "hello_s"), "links.tcp")
        tcp = TcpListen(
            _get(t, "host", "links.tcp", (str,), "0.0.0.0"),
            _get(t, "port", "links.tcp", (int,), 7700, _range(0, 65535)),
            _get(t, "backlog", "links.tcp", (int,), 4096, _range(16, 65535)),
            _get(t, "max_links", "links.tcp", (int,), 2000, _range(1, 1_000_000)),
            float(_get(t, "hello_s", "links.tcp", (int, float), 5.0, _range(0.5, 300))),
        )
    if not serial and tcp is None:
        raise ConfigError("links", "no device link: add [[links.serial]] or [links.tcp]")
    ports = [s.port for s in serial]
    if len(set(ports)) != len(ports):
        raise ConfigError("links.serial", "the same port is listed twice")
    ob = _get(data, "outbox", "", (dict,), {})
    _no_extra(ob, ("max_events", "max_age_days"), "outbox")
    st = _get(data, "status", "", (dict,), {})
    _no_extra(st, ("listen",), "status")
    status = None
    if "listen" in st:
        status = _host_port(_get(st, "listen", "status", (str,)), "status.listen")
    return GatewayConfig(
        site=site,
        gateway_id=gw,
        keys=keys,
        state_dir=(base / _get(g, "state_dir", "gateway", (str,), "var")).resolve(),
        mqtt=_mqtt(_get(data, "mqtt", "", (dict,)), base, site, gw, files),
        serial=tuple(serial),
        tcp=tcp,
        heartbeat_s=float(_get(g, "heartbeat_s", "gateway", (int, float), 10, _range(1, 3600))),
        missed_heartbeats=_get(g, "missed_heartbeats", "gateway", (int,), 3, _range(1, 100)),
        outbox_max_events=_get(ob, "max_events", "outbox", (int,), 1_000_000, _range(1, 10**9)),
        outbox_max_age_s=86400.0
        * _get(ob, "max_age_days", "outbox", (int, float), 30, _range(0.0001, 3650)),
        status=status,
    )


def load(path: Path) -> GatewayConfig:
    try:
        data = tomllib.loads(read_small_file(Path(path), "config"))
    except RecursionError:
        raise ConfigError("config", "%s is nested too deeply" % path) from None
    except OSError as e:
        raise ConfigError("config", "cannot read %s (%s)" % (path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", "%s is not valid TOML: %s" % (path, e)) from None
    return parse(data, Path(path).resolve().parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
