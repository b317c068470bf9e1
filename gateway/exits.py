"""How the gateway ends, for a service manager (examples/systemd/gasguard-gateway.service).

Nothing a device sends ends the gateway: a failed task is logged, counted and restarted. What
cannot be survived ends it with a sysexits(3) code, never 0, so Restart=on-failure restarts it:

    0   stopped by SIGTERM or SIGINT
    2   the configuration is invalid (the gasguard command's "bad input"; not worth restarting)
    70  EX_SOFTWARE   a task kept failing (RESTARTS times within RESTART_WINDOW_S): a bug
    71  EX_OSERR      a listening socket could not be opened (the port is taken)
    73  EX_CANTCREAT  the state directory cannot be created or written (the path is named)
    74  EX_IOERR      the outbox failed in a way retrying cannot mend (a damaged database file
                      found while running: at the next start it is checked, moved aside and the
                      loss reported; a full disk is not fatal: devices are not acknowledged
                      until space returns)
"""

from __future__ import annotations

EX_OK = 0
EX_CONFIG = 2
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_IOERR = 74

RESTARTS = 5
RESTART_WINDOW_S = 60.0


class Fatal(Exception):
    """A failure the gateway cannot survive: exit with `code` after saying `message`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
