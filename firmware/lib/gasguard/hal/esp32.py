# ESP32 backend: machine.UART with a GPIO driving the RS-485 transceiver's DE/RE (the ESP32 port
# has no RS-485 mode), Pins, a PWM buzzer, the hardware watchdog, littlefs paths. Kept thin: the
# logic lives in the portable modules; this file is type-checked against micropython-esp32-stubs.
import socket
import time

import machine
import network

WDT_TIMEOUT_MS = 2000


class RS485:
    """Half-duplex UART: raise DE, write, wait for the last bit (flush), one character of guard
    time, release DE so the detector's answer can be heard."""

    def __init__(self, uart_id, baud, tx, rx, de=None):
        self.uart = machine.UART(
            uart_id,
            baudrate=baud,
            bits=8,
            parity=None,
            stop=1,
            tx=tx,
            rx=rx,
            timeout=0,
            timeout_char=0,
            rxbuf=256,
        )
        self.de = machine.Pin(de, machine.Pin.OUT, value=0) if de is not None else None
        self.guard_us = 11000000 // baud

    def write(self, buf):
        de = self.de
        if de is None:  # auto-direction transceiver
            self.uart.write(buf)
            return
        de.value(1)
        self.uart.write(buf)
        self.uart.flush()  # returns when the last stop bit has left on the ESP32 port
        time.sleep_us(self.guard_us)
        de.value(0)

    def readinto(self, buf):
        if not self.uart.any():
            return 0
        return self.uart.readinto(buf) or 0


class Buzzer:
    """A passive sounder on PWM: value(1) sounds a 3 kHz tone, value(0) silences it."""

    def __init__(self, pin):
        self.pwm = machine.PWM(machine.Pin(pin), freq=3000, duty_u16=0)

    def value(self, v=None):
        if v is None:
            return 1 if self.pwm.duty_u16() else 0
        self.pwm.duty_u16(32768 if v else 0)
        return None


class UartLink:
    def __init__(self, uart_id, baud, tx, rx):
        self.uart = machine.UART(
            uart_id,
            baudrate=baud,
            tx=tx,
            rx=rx,
            timeout=0,
            timeout_char=0,
            rxbuf=1024,
            txbuf=1024,
        )

    def up(self):
        return True

    def poll(self, now_ms):
        pass

    def read_into(self, buf):
        if not self.uart.any():
            return 0
        return self.uart.readinto(buf) or 0

    def write(self, data):
        return self.uart.write(data[:128]) or 0


class WifiLink:
    """TCP to the gateway over Wi-Fi, reconnecting with backoff. Link loss is noticed by the
    gateway's silence (keepalive), not by isconnected()."""

    def __init__(self, ssid, password, host, port, silence_ms=30000):
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        self.ssid = ssid
        self.password = password
        self.host = host
        self.port = port
        self.s = None
        self.retry_at = 0
        self.backoff = 1000
        self.last_rx = time.ticks_ms()
        self.silence_ms = silence_ms

    def up(self):
        return self.s is not None

    def _drop(self, now_ms):
        if self.s is not None:
            self.s.close()
        self.s = None
        self.retry_at = time.ticks_add(now_ms, self.backoff)
        self.backoff = min(self.backoff * 2, 60000)

    def poll(self, now_ms):
        if self.s is not None:
            if time.ticks_diff(now_ms, self.last_rx) > self.silence_ms:
                self._drop(now_ms)
            return
        if time.ticks_diff(now_ms, self.retry_at) < 0:
            return
        if not self.wlan.isconnected():
            self.wlan.connect(self.ssid, self.password)  # returns at once; checked next time
            self.retry_at = time.ticks_add(now_ms, self.backoff)
            return
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(socket.getaddrinfo(self.host, self.port)[0][-1])
        except OSError as e:
            if e.args[0] not in (115, 119):  # EINPROGRESS / EALREADY
                s.close()
                self._drop(now_ms)
                return
        self.s = s
        self.last_rx = now_ms
        self.backoff = 1000

    def read_into(self, buf):
        if self.s is None:
            return 0
        try:
            n = self.s.readinto(buf)
        except OSError:
            return 0
        if n:
            self.last_rx = time.ticks_ms()
        return n or 0

    def write(self, data):
        if self.s is None:
            return 0
        try:
            return self.s.write(data) or 0
        except OSError:
            self._drop(time.ticks_ms())
            return 0


_CAUSES = {
    machine.PWRON_RESET: "power",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "wdt",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}


class Board:
    def __init__(self, cfg, root="/data"):
        self.root = root
        self._cfg = cfg
        p = cfg.pins
        out = machine.Pin.OUT
        self.valve = machine.Pin(cfg.valve["pin"], out, value=0)
        self.red = machine.Pin(p["red"], out, value=0)
        self.yellow = machine.Pin(p["yellow"], out, value=0)
        self.green = machine.Pin(p["green"], out, value=0)
        self.fan = machine.Pin(p["fan"], out, value=0)
        self.buzzer = Buzzer(p["buzzer"])
        self.ack = _button(p["ack"], p["buttons_active_low"])
        self.reset = _button(p["reset"], p["buttons_active_low"])
        pos = cfg.valve["position_pin"]
        self.valve_pos = machine.Pin(pos, machine.Pin.IN) if pos is not None else None
        self.wdt = machine.WDT(timeout=WDT_TIMEOUT_MS)

    def bus(self):
        b = self._cfg.bus
        return RS485(b["uart"], b["baud"], b["tx"], b["rx"], b["de"])

    def link(self):
        lk = self._cfg.link
        if lk["kind"] == "uart":
            return UartLink(lk["uart"], lk["baud"], lk["tx"], lk["rx"])
        if lk["kind"] == "tcp":
            return WifiLink(lk["ssid"], lk["password"], lk["host"], lk["port"])
        return None

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")

    def service(self, now_ms):
        pass

    def heap_free(self):
        import gc

        return gc.mem_free()

    def watchdog_starve(self):
        while True:  # the WDT cannot be stopped: it reboots us with the valve closed
            time.sleep_ms(100)

    def maintenance(self):
        # The installer interrupted the firmware from the console (mpremote, the flash tool): the
        # valve is already closed. The WDT cannot be stopped, so a timer keeps it fed while the
        # REPL is in use; machine.reset() or a power cycle returns to normal operation.
        wdt = self.wdt
        self._feeder = machine.Timer(0)
        self._feeder.init(period=500, mode=machine.Timer.PERIODIC, callback=lambda t: wdt.feed())


def _button(gpio, active_low):
    # GPIO 34-39 are input-only and have no internal pulls: those need external resistors
    if gpio >= 34:
        return machine.Pin(gpio, machine.Pin.IN)
    pull = machine.Pin.PULL_UP if active_low else machine.Pin.PULL_DOWN
    return machine.Pin(gpio, machine.Pin.IN, pull)
