"""Process limits the gateway needs: as many open files as the system allows it (each board on
Wi-Fi is a socket; the usual soft limit of 1,024 ran out at ~1,000 boards and idle sockets)."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("gasguard.gateway")


def raise_open_files() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("open-file limit not raised", extra={"soft": soft, "hard": hard,
                                                             "error": str(e)})  # fmt: skip
    return soft
