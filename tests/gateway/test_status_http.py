"""Issue 20 item 12: the status endpoint matched paths by prefix (PUT /status/valve answered 200)
and a 70 KB request line gave an unhandled traceback. Now aiohttp's server: exact routes, GET
only, bounded requests, and Prometheus metrics at /metrics. `gasguard gateway status` shows each
board's instance and its heartbeat's lost count."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

from gasguard.tools.sim.syndevice import SynDevice, open_link, run_tcp

from .conftest import KEYS


def _http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _code(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp else 0


def test_status_routes_are_exact_get_only_and_bounded(mosquitto, gateways):
    gw = gateways.start(gateways.config(mosquitto))
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

    async def scenario():
        await run_tcp(dev, "127.0.0.1", gw.tcp_port, 3)
        r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
        w.write(dev.heartbeat(lost=7))
        await w.drain()
        await asyncio.sleep(0.5)
        w.close()

    asyncio.run(scenario())
    port = gw.status_port
    get = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _code(_http(port, get % b"/status")) == 200
    assert _code(_http(port, get % b"/status/valve")) == 404
    assert _code(_http(port, get % b"/statusx")) == 404
    assert _code(_http(port, b"PUT /status/valve HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")) == 404  # fmt: skip
    assert _code(_http(port, b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")) == 405  # fmt: skip
    assert _code(_http(port, b"HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))\
        == 405  # fmt: skip
    huge = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _code(_http(port, huge)) in (400, 414)
    header = b"GET /status HTTP/1.1\r\nX: " + b"b" * 70_000 + b"\r\nConnection: close\r\n\r\n"
    assert _code(_http(port, header)) in (400, 431)
    assert _code(_http(port, get % b"/status")) == 200  # still serving
    metrics = _http(port, get % b"/metrics").decode()
    for name in (
        'gasguard_gateway_frames_total{result="ok"}',
        "gasguard_gateway_outbox_depth",
        "gasguard_gateway_publishes_refused_total",
        "gasguard_gateway_publish_latency_seconds_bucket",
        "gasguard_gateway_links",
        "gasguard_gateway_devices_online 1.0",
    ):  # fmt: skip
        assert name in metrics, name
    st = gw.status()
    assert st["devices"]["kitchen-1"]["instance"] == dev.inst
    assert st["devices"]["kitchen-1"]["lost"] == 7
    assert "Traceback" not in gw.log_path.read_text()
    text = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "gateway", "status", "--config",
         str(gw.config)], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in text.splitlines() if "kitchen-1" in x)
    assert dev.inst in line and "lost 7" in line, text
    assert "None" not in text, text  # a figure not measured yet is "—" (issue 22)
    raw = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "gateway", "status", "--config",
         str(gw.config), "--json"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(raw)["devices"]["kitchen-1"]["lost"] == 7  # stdout is the JSON, only
