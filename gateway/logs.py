"""Structured logs: one JSON object per line on stderr, with the fields passed as `extra=`."""

from __future__ import annotations

import json
import logging
import time

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % record.msecs,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "info") -> None:
    h = logging.StreamHandler()
    h.setFormatter(JsonFormatter())
    root = logging.getLogger("gasguard")
    root.handlers[:] = [h]
    root.setLevel(level.upper())
    root.propagate = False


class RateLimited:
    """At most one line per key every `every_s` (a misconfigured board sends a frame a second
    for ever), saying how many were held back since the last; the table of keys is bounded, as
    the keys (device ids in frames) come from outside."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 60.0,
        level: int = logging.WARNING,
        max_keys: int = 1024,
        clock=time.monotonic,
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self.level = level
        self.max_keys = max_keys
        self.clock = clock
        self._last: dict[object, tuple[float, int]] = {}  # key -> (logged at, held back since)

    def warn(self, key: object, msg: str, **fields: object) -> bool:
        """Log unless this key was logged within every_s; True when it was logged."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._last) >= self.max_keys:
            self._last.clear()  # a flood of made-up ids: start over rather than grow
        self._last[key] = (now, 0)
        self.logger.log(self.level, msg, extra=dict(fields, held_back=last[1] if last else 0))
        return True
