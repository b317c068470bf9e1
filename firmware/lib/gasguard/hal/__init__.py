# Hardware abstraction: one backend per target, each building the same set of objects.
#   bus      Modbus line: write(buf) (drives RS-485 direction), readinto(buf) without waiting
#   outputs  valve, buzzer, red, yellow, green, fan: value(v)
#   inputs   ack, reset, valve_pos: value() -> 0/1
#   wdt      feed()
#   root     directory for the event log and persistent counters
#   reset_cause() -> "power", "wdt", "soft", "panic", ...
#   link()   the gateway transport: read_into(buf) -> n, write(data) -> n, up() -> bool, poll(now)
#   service(now_ms)  backend housekeeping in the loop's slack (virtual panel, Wi-Fi reconnect)
