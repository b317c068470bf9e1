# GasGuard protocol: the one definition of the device<->gateway link and the regulator stream.
# Relative imports only: the same files run on the device (under /lib/gasguard/protocol) and in
# CPython (as gasguard.protocol).
import sys

VERSION = "0.1.0"  # the release: firmware, gateway and tools (pyproject reads it too)
PROTOCOL_VERSION = 2

# const(): MicroPython's compile-time constant (a private `_NAME = const(...)` keeps no name on
# the device); on CPython just the value. The protocol modules import it from here.
if sys.implementation.name == "micropython":
    from micropython import const  # noqa: F401
else:

    def const(x):
        return x
