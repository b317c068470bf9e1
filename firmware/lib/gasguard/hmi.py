# Buttons (polled and debounced every cycle: ESP32 pin IRQs are soft and can be dropped) and the
# indicators: green power/normal, yellow fault, red alarm (low 1 Hz, high 4 Hz), buzzer, fan.
from time import ticks_diff


class Button:
    """Debounced push button. pressed() is True once per press, after hold_ms of holding."""

    def __init__(self, pin, active_low=True, debounce_ms=30, hold_ms=0):
        self.pin = pin
        self.active = 0 if active_low else 1
        self.debounce_ms = debounce_ms
        self.hold_ms = hold_ms
        self.raw = False
        self.stable = False
        self.changed_at = 0
        self.down_at = 0
        self.fired = False

    def update(self, now_ms):
        raw = self.pin.value() == self.active
        if raw != self.raw:
            self.raw = raw
            self.changed_at = now_ms
        if raw != self.stable and ticks_diff(now_ms, self.changed_at) >= self.debounce_ms:
            self.stable = raw
            if raw:
                self.down_at = now_ms
                self.fired = False
        if self.stable and not self.fired and ticks_diff(now_ms, self.down_at) >= self.hold_ms:
            self.fired = True
            return True
        return False


class Output:
    """A digital output that touches the pin only on change."""

    def __init__(self, pin):
        self.pin = pin
        self.level = -1

    def set(self, v):
        if v != self.level:
            self.level = v
            self.pin.value(v)


def blink(now_ms, half_period_ms):
    return 1 if (now_ms // half_period_ms) & 1 == 0 else 0


class Indicators:
    def __init__(self, red, yellow, green, buzzer, fan):
        self.red = Output(red)
        self.yellow = Output(yellow)
        self.green = Output(green)
        self.buzzer = Output(buzzer)
        self.fan = Output(fan)

    def show(self, now_ms, safety, valve, config_ok=True, identify=False, selftest=False):
        if not config_ok:
            self.red.set(0)
            self.yellow.set(1)
            self.green.set(0)
            self.buzzer.set(0)
            self.fan.set(0)
            return
        if selftest:  # every lamp and the sounder, so a person can see and hear them work
            self.red.set(1)
            self.yellow.set(1)
            self.green.set(1)
            self.buzzer.set(1)
            self.fan.set(1 if safety.any_alarm else 0)
            return
        level = safety.site_level
        if level == 2:
            red = blink(now_ms, 125)  # high alarm: 4 Hz
        elif level == 1:
            red = blink(now_ms, 500)  # low alarm: 1 Hz
        elif safety.valve_fault or safety.latched:
            red = 1  # valve closed (or faulty): steady until reset on site
        else:
            red = 0
        self.red.set(red)
        if safety.valve_fault:
            self.yellow.set(1)
        else:
            self.yellow.set(blink(now_ms, 500) if safety.fault else 0)
        if valve.awaiting_knob:
            self.green.set(blink(now_ms, 100))
        elif identify:  # "which board is this?": green flashes at 2 Hz
            self.green.set(blink(now_ms, 250))
        else:
            self.green.set(1)
        b = safety.buzzer()
        if b == 1:
            self.buzzer.set(blink(now_ms, 250))
        elif b == 2:
            self.buzzer.set(1 if now_ms % 5000 < 100 else 0)  # fault chirp every 5 s
        else:
            self.buzzer.set(0)
        self.fan.set(1 if safety.any_alarm else 0)
