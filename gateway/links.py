"""Which TCP device connections the gateway keeps: a cap, and who is shed first.

A connection is *unauthenticated* until it carries an accepted frame (right CRC, a provisioned
device's tag, a well-formed body, inside the device's session and replay window); it must do so
within `hello_s` or it is closed, and any byte that is not such a frame keeps nothing alive (idle
means no accepted frame).

Past max_links connections, each new one sheds the oldest unauthenticated connection (it has
had the longest to speak), or if there is none, the authenticated one idle longest. A real board
sends its birth the moment it connects, so a flood of silent or slow connections churns among
itself, and 1,000 boards reconnecting at once after a gateway restart (the listen backlog holds
them) are not shed by each other as long as max_links leaves room for them.

A connection becomes *authenticated* with its first accepted frame. A board that reconnects
(after its Wi-Fi dropped) may still have its old connection open, half-open and silent: the new
connection replaces it once the board's birth there is accepted (one of its session, or one
confirming a new session after a challenge). So a known board reconnecting always gets in.

A recorded frame of a real board is authentic but refused by the session (replay, or a birth
that does not echo the challenge): it neither authenticates a connection nor replaces the
board's own, and a connection that carries nothing else is closed after hello_s.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("gasguard.gateway")


class Link(Protocol):
    valid_at: float  # when it last carried a valid frame (monotonic); 0: never
    devices: set[str]  # devices whose valid frames it carried

    def shed(self, reason: str) -> None: ...


class LinkTable:
    def __init__(self, max_links: int) -> None:
        self.max_links = max_links
        self.unauth: dict[Link, None] = {}  # in order of arrival
        self.auth: dict[Link, None] = {}
        self.by_device: dict[str, set[Link]] = {}
        self.shed_count: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.unauth) + len(self.auth)

    def _shed(self, link: Link, why: str) -> None:
        self.shed_count[why] = self.shed_count.get(why, 0) + 1
        self.closed(link)
        link.shed(why)

    def opened(self, link: Link) -> None:
        self.unauth[link] = None
        while len(self) > self.max_links:
            if len(self.unauth) > 1:
                self._shed(next(iter(self.unauth)), "unauthenticated")
            elif self.auth:
                self._shed(min(self.auth, key=lambda x: x.valid_at), "idle")
            else:
                break

    def seen(self, link: Link, device: str) -> None:
        """A valid frame of `device` on `link` (the first of this device on it)."""
        if link in self.unauth:
            del self.unauth[link]
            self.auth[link] = None
        others = self.by_device.setdefault(device, set())
        for old in list(others):
            if old is not link and old.devices <= {device}:
                self._shed(old, "replaced")  # the board's previous connection, gone stale
        others.add(link)

    def closed(self, link: Link) -> None:
        self.unauth.pop(link, None)
        self.auth.pop(link, None)
        for d in link.devices:
            links = self.by_device.get(d)
            if links is not None:
                links.discard(link)
                if not links:
                    del self.by_device[d]
