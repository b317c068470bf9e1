"""The console served by uvicorn on a socket bound first: a port already taken is an error at
once (not after the work before it), and port 0 gets a free one. For the commands that start a
console of their own: screenshots, bench web, `gasguard demo --web`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


def bind(host: str, port: int) -> socket.socket:
    """OSError (say, the port is taken) here, before anything else starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # a browser told the address early waits for the server, not refused
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)


def server(app: Any) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))


@contextlib.contextmanager
def in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve app from a thread of this process while the block runs; yields its base URL."""
    sock = bind(host, port)
    srv = server(app)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the console did not start")
        time.sleep(0.02)
    try:
        yield base_url(sock)
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
