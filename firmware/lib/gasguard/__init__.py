# GasGuard firmware (MicroPython, ESP32). The protocol package sits beside it as gasguard.protocol.
VERSION = "0.1.0"
