"""The exit codes every gasguard command keeps, and the --help text that states them.

The README's command table says the same. `gasguard gateway` (run) is the exception: as a service
it exits with a sysexits code on a failure it cannot survive (gateway/exits.py), for systemd.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # the thing checked failed, or missed its target
BAD_INPUT = 2  # bad usage or bad input: change the command line or the file
UNREACHABLE = 3  # a device or service did not answer: check the cable, the port, the address

EXIT_CODES = """exit codes:
  0  ok
  1  check failed
  2  bad usage or bad input
  3  device or service unreachable"""


def epilog(notes: str | None = None) -> str:
    """A command's --help epilog: the exit codes, then what they mean for this command."""
    if notes and EXIT_CODES in notes:
        return notes
    return "%s\n\n%s" % (EXIT_CODES, notes) if notes else EXIT_CODES
