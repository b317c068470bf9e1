"""Which TCP device connections the gateway keeps: a cap, and who is shed first.

A connection is *unauthenticated* until it carries a valid frame (right CRC, a provisioned
device's tag, a well-formed body); it must do so within `hello_s` or it is closed, and any byte
that is not a valid frame keeps nothing alive (idle means no valid frame). Unauthenticated
connections have a small cap of their own (a quarter of max_links, at least 16): past it the
oldest is closed. A real board sends its birth the moment it connects, so a flood of silent or
slow connections churns among itself and a board still gets in.

A connection becomes *authenticated* with its first valid frame. A board that reconnects (after
its Wi-Fi dropped, or the gateway restarted) may still have its old connection open, half-open
and silent: the new connection replaces it. Past max_links authenticated connections, the one
idle longest (other than the newcomer) is closed: a known board reconnecting always gets in.
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
        self.max_unauth = max(16, max_links // 4)
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
        while len(self.unauth) > self.max_unauth:
            self._shed(next(iter(self.unauth)), "unauthenticated")

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
        if len(self.auth) > self.max_links:
            victim = min((x for x in self.auth if x is not link), key=lambda x: x.valid_at)
            self._shed(victim, "idle")

    def closed(self, link: Link) -> None:
        self.unauth.pop(link, None)
        self.auth.pop(link, None)
        for d in link.devices:
            links = self.by_device.get(d)
            if links is not None:
                links.discard(link)
                if not links:
                    del self.by_device[d]
