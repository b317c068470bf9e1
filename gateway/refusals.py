"""Topics the broker refuses (MQTT 5 PUBACK with a failure reason: an ACL, a quota), one spell
each from the first refusal until a publish to the topic goes through.

A refused topic is held: its rows stay in the outbox and the rest of the traffic goes on; after
a backoff one publish to it is tried again (a probe), and the backoff doubles while the probes
are refused. The spells outlive connections: mosquitto 2.0 closes the connection after refusing
a QoS 1 publish, and trying the refused row again first on every reconnect let no other board's
alarm through. One error line when a spell begins and one info line when it ends, not a line
per try. Plain bookkeeping: the publisher holds the rows and states and sends the probes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("gasguard.gateway.mqtt")

RETRY_S = 1.0
# an ACL is mended by hand: a probe every two minutes at worst finds it soon enough, and costs a
# reconnect against mosquitto (which closes after a refusal), not a stream of them
RETRY_MAX_S = 120.0


@dataclass
class Spell:
    since: float
    due: float  # when the next probe may go
    reason: str
    tries: int = 1  # refused probes, the first refusal included
    refusals: int = 1  # every refused publish, probes or not
    probing: bool = False  # a probe may go or is on its way


class Refusals:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = RETRY_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.clock = clock
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.spells: dict[str, Spell] = {}  # topic -> its spell; topics are the config's devices'
        self.events = 0  # refused event publishes (each try)
        self.states = 0  # refused retained state publishes (each try)
        self.by_reason: Counter[str] = Counter()  # events only, as before states were counted

    def refused(self, topic: str, reason: str, state: bool, event: str = "") -> float | None:
        """A publish to topic was refused: seconds until its next probe when one is to be
        scheduled, None when one already is (a publish sent before the spell began)."""
        now = self.clock()
        if state:
            self.states += 1
        else:
            self.events += 1
            self.by_reason[reason] += 1
        s = self.spells.get(topic)
        if s is None:
            self.spells[topic] = Spell(now, now + self.retry_s, reason)
            log.error(
                "broker refused a publish: kept and tried again until it goes through",
                extra={"topic": topic, "reason": reason, "event": event or None,
                       "retry_in_s": self.retry_s},
            )  # fmt: skip
            return self.retry_s
        s.refusals += 1
        s.reason = reason
        if not s.probing:
            return None
        s.tries += 1
        s.probing = False
        delay = min(self.retry_s * 2 ** (s.tries - 1), self.retry_max_s)
        s.due = now + delay
        return delay

    def accepted(self, topic: str) -> bool:
        """A publish to topic went through: True when that ends its spell."""
        s = self.spells.pop(topic, None)
        if s is None:
            return False
        after_s = round(self.clock() - s.since, 1)
        log.info(
            "broker accepts a topic again",
            extra={"topic": topic, "refused": s.refusals, "after_s": after_s},
        )
        return True

    def held(self, topic: str) -> bool:
        s = self.spells.get(topic)
        return s is not None and not s.probing

    def due(self) -> list[str]:
        """Topics whose next probe may go now (marked as probing)."""
        now = self.clock()
        out = []
        for topic, s in self.spells.items():
            if not s.probing and s.due <= now:
                s.probing = True
                out.append(topic)
        return out

    def lost(self) -> None:
        """The connection went: a probe that got no answer goes again on the next one."""
        for s in self.spells.values():
            s.probing = False
