# Unix-port gateway transports for the virtual board: a pty standing in for the link UART, or a
# TCP client. Neither ever blocks the loop.
import select
import socket
import time

from gasguard.hal.unix import _read_ready


class PtyLink:
    def __init__(self, path):
        self.f = open(path, "r+b")
        self.p = select.poll()
        self.p.register(self.f, select.POLLIN | select.POLLOUT)
        self.one = bytearray(1)
        self.pin = select.poll()
        self.pin.register(self.f, select.POLLIN)

    def up(self):
        return True

    def poll(self, now_ms):
        pass

    def read_into(self, buf):
        return _read_ready(self.f, self.pin, buf, self.one)

    def write(self, data):
        for _, ev in self.p.ipoll(0):
            if ev & select.POLLOUT:
                return self.f.write(data[:256])
        return 0


class TcpLink:
    """Client connection to the gateway, reconnecting with backoff; never blocks the loop."""

    def __init__(self, host, port):
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.s = None
        self.retry_at = 0
        self.backoff = 500

    def up(self):
        return self.s is not None

    def poll(self, now_ms):
        if self.s is None and time.ticks_diff(now_ms, self.retry_at) >= 0:
            s = socket.socket()
            try:
                s.connect(self.addr)  # loopback: completes or fails at once
                s.setblocking(False)
                self.s = s
                self.backoff = 500
            except OSError:
                s.close()
                self.retry_at = time.ticks_add(now_ms, self.backoff)
                self.backoff = min(self.backoff * 2, 10000)

    def _drop(self):
        if self.s is not None:
            self.s.close()
        self.s = None

    def read_into(self, buf):
        if self.s is None:
            return 0
        try:
            n = self.s.readinto(buf)
        except OSError:
            return 0
        if n == 0:
            self._drop()  # orderly close by the gateway
            return 0
        return n or 0

    def write(self, data):
        if self.s is None:
            return 0
        try:
            return self.s.write(data) or 0
        except OSError as e:
            if e.args and e.args[0] == 11:  # EAGAIN: socket buffer full, try later
                return 0
            self._drop()
            return 0
