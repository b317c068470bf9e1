# Unix-port gateway link over TCP (the virtual board's stand-in for Wi-Fi), reconnecting with
# backoff. Never blocks the loop. Its own module: a board loads only the transport it uses.
import socket
import time


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
