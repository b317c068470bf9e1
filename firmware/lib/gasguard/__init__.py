# GasGuard firmware (MicroPython, ESP32). The protocol package sits beside it as gasguard.protocol.
import sys


class Values:
    """The validated configuration values (see config.Config.plain): a class that stays when the
    validator and the boot code are dropped."""

    def digest_hex(self):
        return self.digest


def forget(package, name):
    """Drop a submodule entirely, from sys.modules and its package, so its code can be freed:
    what a 110 KB heap needs once a module's work is done (the config validator, the boot)."""
    sys.modules.pop(package.__name__ + "." + name, None)
    if name in package.__dict__:
        delattr(package, name)
