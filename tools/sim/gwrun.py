"""Start a gateway from Python (tests, benchmarks, the demo): write its TOML config and key file,
run `gasguard gateway` as a process and read the ports it reports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from gasguard.tools.sim.brokers import free_port, stop_process


def write_config(
    directory: Path,
    keys: dict[str, bytes],
    broker_url: str,
    site: str = "site-1",
    gateway_id: str = "gw-1",
    tcp_port: int = 0,
    serial: list[str] = (),  # type: ignore[assignment]
    heartbeat_s: float = 10,
    protocol: str = "5",
    window: int = 64,
    extra: str = "",
    status_every_s: float | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keys.toml").write_text(
        "[keys]\n" + "".join('"%s" = "%s"\n' % (d, k.hex()) for d, k in keys.items())
    )
    (directory / "keys.toml").chmod(0o600)
    lines = [
        "[gateway]",
        'site = "%s"' % site,
        'id = "%s"' % gateway_id,
        'keys = "keys.toml"',
        'state_dir = "var"',
        "heartbeat_s = %s" % heartbeat_s,
        "",
        "[links.tcp]",
        'host = "127.0.0.1"',
        "port = %d" % tcp_port,
        "",
    ]
    for port in serial:
        lines += ["[[links.serial]]", 'port = "%s"' % port, "baud = 115200", ""]
    lines += [
        "[mqtt]",
        'url = "%s"' % broker_url,
        'protocol = "%s"' % protocol,
        "window = %d" % window,
        "" if status_every_s is None else "status_every_s = %s" % status_every_s,
        "",
        "[status]",
        'listen = "127.0.0.1:%d"' % free_port(),
        "",
        extra,
    ]
    path = directory / "gateway.toml"
    path.write_text("\n".join(lines))
    return path


class GatewayProcess:
    def __init__(self, config: Path, log_level: str = "warning") -> None:
        self.config = config
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.tcp_port = 0
        self.status_port = 0
        self.log_path = config.parent / "gateway.log"

    def start(self) -> GatewayProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gasguard.gateway", "--config", str(self.config)]
            + ["--log-level", self.log_level],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                "the gateway did not start (exit %s): %s"
                % (self.proc.wait(10), self.log_path.read_text()[-2000:])
            )
        ports = json.loads(line)
        self.tcp_port = ports["tcp_port"]
        self.status_port = ports["status_port"]
        return self

    def kill(self) -> None:
        """SIGKILL: the site box losing power, as far as the process can tell."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def status(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(
            "http://127.0.0.1:%d/status" % self.status_port, timeout=5
        ) as r:
            return json.load(r)
