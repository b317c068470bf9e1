# Unix-port gateway link over a pty standing in for the link UART (the virtual board's USB or
# RS-485 link). Never blocks the loop. Its own module: a board loads only the transport it uses.
# read_ready: the unix HAL's non-blocking pty reader, passed in (this module imports no HAL).
import select


class PtyLink:
    def __init__(self, path, read_ready):
        self._read_ready = read_ready
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
        return self._read_ready(self.f, self.pin, buf, self.one)

    def write(self, data):
        for _, ev in self.p.ipoll(0):
            if ev & select.POLLOUT:
                return self.f.write(data[:256])
        return 0
