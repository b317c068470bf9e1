# Unix-port backend: the virtual board. UARTs are ptys, pins live on a panel that a test harness
# reaches over TCP (one JSON object a line), flash is a directory, the watchdog is reported to the
# harness, which restarts the process when the feeds stop.
import os
import select
import socket
import time

# Self-contained on purpose: the safe core (gasguard.safe) drives the outputs through this
# module's panel before any other firmware module is loaded, so it imports none of them.


class Pin:
    def __init__(self, panel, name, value=0, output=True):
        self.panel = panel
        self.name = name
        self.v = value
        self.output = output

    def value(self, v=None):
        if v is None:
            return self.v
        if v != self.v:
            self.v = v
            if self.output:
                self.panel.changed(self, v)


class Panel:
    """Pins of the virtual board. With a port, a harness can connect.
    Board to harness: "o <ms> <pin> <0|1>" for every output change, "s <pin>=<v> ..." (a snapshot
    on connect), "w <ms>" watchdog fed, "m" maintenance (the loop was stopped from the console).
    Harness to board: "<pin> <0|1>" sets an input; "fault crash", "fault slow" or "fault hang"
    injects a firmware fault (an exception, a loop that overruns its period, a loop that never
    returns) so that the fail-safe paths can be tested."""

    OUTPUTS = ("valve", "buzzer", "red", "yellow", "green", "fan")
    INPUTS = ("ack", "reset", "valve_pos")

    def __init__(self, port=None, buttons_active_low=True):
        self.pins = {}
        self.log = []  # pending output changes for the harness
        idle = 1 if buttons_active_low else 0
        for n in self.OUTPUTS:
            self.pins[n] = Pin(self, n, 0, True)
        for n in ("ack", "reset"):
            self.pins[n] = Pin(self, n, idle, False)
        self.pins["valve_pos"] = Pin(self, "valve_pos", 0, False)
        # input levels at power-up, set by the harness ("valve_pos=1 reset=1"): a valve body keeps
        # its position across a reboot, and the firmware reads it before anyone can connect
        for kv in (os.getenv("GASGUARD_PANEL_INPUTS") or "").split():
            name, _, v = kv.partition("=")
            pin = self.pins.get(name)
            if pin is not None and not pin.output:
                pin.v = 1 if v == "1" else 0
        self.server = None
        self.clients = []
        self.inbuf = {}
        self.port = None
        self.wdt_fed = 0
        self.wdt_sent = 0
        self.fault = None
        if port is not None:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(2)
            s.setblocking(False)
            self.server = s
            self.port = port

    def changed(self, pin, v):
        # kept until a harness is connected (a valve body it simulates must see every pulse,
        # those of the safe core before anyone could connect too), up to a bound
        if self.server is not None and len(self.log) < 64:
            self.log.append((time.ticks_ms(), pin.name, v))

    def _send_all(self, data):
        for c in self.clients[:]:
            try:
                c.setblocking(True)
                c.send(data)
                c.setblocking(False)
            except OSError:
                self.clients.remove(c)

    def service(self, now_ms):
        if self.server is None:
            return
        try:
            c, _ = self.server.accept()
            c.setblocking(False)
            self.clients.append(c)
            self.inbuf[id(c)] = b""
            snap = "s " + " ".join("%s=%d" % (n, p.v) for n, p in self.pins.items()) + "\n"
            c.setblocking(True)
            c.send(snap.encode())
            c.setblocking(False)
        except OSError:
            pass
        for c in self.clients[:]:
            try:
                data = c.recv(256)
            except OSError:
                continue
            if not data:
                self.clients.remove(c)
                continue
            buf = self.inbuf.get(id(c), b"") + data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.split()
                if len(parts) == 2 and parts[0] == b"fault":
                    self.fault = parts[1].decode()
                    continue
                pin = self.pins.get(parts[0].decode()) if len(parts) == 2 else None
                if pin is not None and not pin.output:
                    pin.v = 1 if parts[1] == b"1" else 0
            self.inbuf[id(c)] = buf
        if self.log and self.clients:
            out = []
            for t, name, v in self.log:
                out.append("o %d %s %d\n" % (t, name, v))
            self.log = []
            self._send_all("".join(out).encode())
        if self.wdt_fed != self.wdt_sent and time.ticks_diff(now_ms, self.wdt_sent) >= 100:
            self.wdt_sent = self.wdt_fed
            self._send_all(b"w %d\n" % self.wdt_fed)

    def buttons(self, active_low):
        # the buttons' resting level, once the config says how they are wired
        for n in ("ack", "reset"):
            self.pins[n].v = 1 if active_low else 0

    def maintenance(self):
        # console interrupt: tell the harness to stop emulating the watchdog until the next boot
        self.service(time.ticks_ms())
        self._send_all(b"m\n")


_PANEL = []


def panel():
    """The board's one panel, made at first use (by the safe core, at power-up)."""
    if not _PANEL:
        port = os.getenv("GASGUARD_PANEL_PORT")  # set by the virtual-board harness
        _PANEL.append(Panel(int(port) if port else None))
    return _PANEL[0]


class WDT:
    def __init__(self, panel):
        self.panel = panel

    def feed(self):
        self.panel.wdt_fed = time.ticks_ms()


def _read_ready(f, p, buf, one):
    # A file's readinto() waits until the whole buffer is full, so take one byte at a time
    # while poll() says there is one: never blocks, never allocates.
    n = 0
    top = len(buf)
    while n < top:
        ready = False
        for _, ev in p.ipoll(0):
            ready = ev & select.POLLIN
        if not ready or not f.readinto(one):
            break
        buf[n] = one[0]
        n += 1
    return n


class PtyBus:
    """A pty standing in for the RS-485 UART (direction control is the line's business)."""

    def __init__(self, path):
        self.f = open(path, "r+b")
        self.p = select.poll()
        self.p.register(self.f, select.POLLIN)
        self.one = bytearray(1)

    def write(self, buf):
        self.f.write(buf)  # never flush() a tty file: EINVAL

    def readinto(self, buf):
        return _read_ready(self.f, self.p, buf, self.one)


class Board:
    """Everything the firmware needs, built from the config's unix-port fields."""

    def __init__(self, cfg, root):
        self.root = root
        self.panel = panel()
        if not cfg.pins["buttons_active_low"]:
            self.panel.buttons(False)
        pins = self.panel.pins
        self.valve = pins["valve"]
        self.buzzer = pins["buzzer"]
        self.red = pins["red"]
        self.yellow = pins["yellow"]
        self.green = pins["green"]
        self.fan = pins["fan"]
        self.ack = pins["ack"]
        self.reset = pins["reset"]
        has_pos = cfg.valve["position_pin"] is not None
        self.valve_pos = pins["valve_pos"] if has_pos else None
        self.wdt = WDT(self.panel)
        self._cfg = cfg

    def bus(self):
        # the pty standing in for the RS-485 UART: the config's unix-port path, else the one the
        # harness names (so an installer's config reaches the board's flash unchanged)
        return PtyBus(self._cfg.bus["path"] or os.getenv("GASGUARD_BUS_PATH"))

    def link(self):
        lk = self._cfg.link
        if lk["kind"] == "tcp":
            from gasguard.hal.unix_tcp import TcpLink  # loaded only when a link is configured

            return TcpLink(lk["host"], lk["port"])
        path = lk["path"] or os.getenv("GASGUARD_LINK_PATH")
        if lk["kind"] == "uart" and path:
            from gasguard.hal.unix_pty import PtyLink

            return PtyLink(path, _read_ready)
        return None

    def reset_cause(self):
        # the harness leaves a note when it restarted us (watchdog, power cut)
        path = self.root + "/reset_cause"
        try:
            with open(path, "rb") as f:
                raw = f.read()
            os.remove(path)
        except OSError:
            return "power"
        return raw.decode().strip()[:16] or "power"

    def service(self, now_ms):
        self.panel.service(now_ms)
        fault = self.panel.fault
        if fault == "crash":
            self.panel.fault = None
            raise RuntimeError("injected fault (virtual board panel)")
        if fault == "slow":
            time.sleep_ms(150)  # slack work that overruns the loop period every time
        if fault == "hang":
            while True:  # a stuck loop: nothing feeds the watchdog any more
                time.sleep_ms(10)

    def heap_free(self):
        import gc

        return gc.mem_free()

    def maintenance(self):
        self.panel.maintenance()

    def watchdog_starve(self):
        # Stop feeding and wait: the harness sees the feeds stop and restarts us with
        # reset cause "wdt". Without a harness, emulate the reboot by exiting after the timeout.
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < 5000:
            self.panel.service(time.ticks_ms())
            time.sleep_ms(50)
        import sys

        sys.exit(3)
