# GasGuard protocol: the one definition of the device<->gateway link and the regulator stream.
# Relative imports only: the same files run on the device (under /lib/gasguard/protocol) and in
# CPython (as gasguard.protocol).
PROTOCOL_VERSION = 1
