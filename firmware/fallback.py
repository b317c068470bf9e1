# Going back to the previous install (docs/firmware.md, "Installs"): the install gg/current
# names first did not load, so gg/current is rewritten to name the one before it alone (one
# rename) and the board resets into it. Loaded only on that path, from the board's root: it is
# outside the installs, as main.py is, and works for both.
import os
import sys

_POINTER = "gg/current"


def run(cause):
    """Reset into the previous install, saying why; return if there is none to go back to (or
    gg/current cannot be written): then the caller halts as before, valve safe."""
    if not isinstance(cause, str):
        cause = "BOOT FAILED: %s: %s" % (type(cause).__name__, cause)
    try:
        with open(_POINTER) as f:
            names = f.read().split()
        if len(names) < 2:
            return
        if names[1] == ".":  # the bench's install at the root: named by no gg/current at all
            os.remove(_POINTER)
        else:
            with open(_POINTER + ".new", "w") as f:
                f.write(names[1])
            os.rename(_POINTER + ".new", _POINTER)
    except OSError:
        return
    # the virtual board's harness resets the unix port on this line (tools/sim/vboard.py)
    print("%s; install %s does not load: restarting into the previous one (%s)"
          % (cause, names[0], names[1]))  # fmt: skip
    if sys.platform == "esp32":
        import machine

        machine.reset()
    sys.exit(4)
