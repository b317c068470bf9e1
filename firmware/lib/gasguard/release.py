# After a console stop: the firmware's modules are dropped from sys.modules and the package, so
# their bytecode is freed for the REPL's tools (`gasguard flash` needs the heap; the self-test
# imports the few it uses again). Objects still in use (the board, its watchdog feeder, the
# config) keep what they reference. A module of its own, loaded only at a stop: while the board
# runs, every resident byte counts.
import gc
import sys


def release(package):
    for name in list(sys.modules):
        if name.startswith("gasguard."):
            del sys.modules[name]
    for name in list(package.__dict__):
        if type(getattr(package, name)) is type(sys):
            delattr(package, name)
    gc.collect()
