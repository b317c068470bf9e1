# Unix-port gateway link over a pty standing in for the link UART (the virtual board's USB or
# RS-485 link). Never blocks the loop. Its own module: a board loads only the transport it uses.
import select

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
