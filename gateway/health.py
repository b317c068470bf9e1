"""Device health as the regulator sees it: online/offline with session ids, valve, alarm,
detectors and loop statistics, from births, heartbeats and events.

Pure logic with injected clocks: silence is measured on the monotonic clock (NTP stepping the
wall clock forward declared every board offline at once, and a step back hid a dead one for as
long as the step); the wall clock only stamps what is published. It returns what changed; the
gateway turns that into a retained state publish and, for births and deaths, durable events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gasguard.protocol import cloudevents


class Health:
    def __init__(
        self,
        site: str,
        offline_after_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self.offline_after_s = offline_after_s
        self.clock = clock  # wall: published times
        self.monotonic = monotonic  # durations
        self.devices: dict[str, dict[str, Any]] = {}

    def _dev(self, device: str) -> dict[str, Any]:
        d = self.devices.get(device)
        if d is None:
            d = self.devices[device] = {"online": False, "last_seen": 0.0, "seen_at": 0.0}
        return d

    def online_count(self) -> int:
        return sum(1 for d in self.devices.values() if d["online"])

    # --- what arrived --------------------------------------------------------------------------

    def seen(self, device: str) -> str | None:
        """Any valid frame. Returns a 'device.online' detail when the device came back."""
        d = self._dev(device)
        d["last_seen"], d["seen_at"] = self.clock(), self.monotonic()
        if d["online"] or "session" not in d:
            return None  # a device not yet introduced comes online with its birth
        d["online"] = True
        return "frames again (session %s)" % d["session"]

    def birth(self, device: str, boot: int, body: dict[str, Any]) -> str | None:
        """A birth opens a session. Returns a 'device.online' detail for a new session."""
        d = self._dev(device)
        session = "%s:%s:%d" % (device, body["inst"], boot)
        new = d.get("session") != session
        was_online = d["online"]
        d.update(
            online=True,
            last_seen=self.clock(),
            seen_at=self.monotonic(),
            session=session,
            instance=body["inst"],
            boot=boot,
            reset_cause=body["cause"],
            fw=body["fw"],
            cfg=body["cfg"],
            valve_kind=body["valve"],
            dets_meta=body["dets"],
        )
        if not new:
            return None
        detail = "session %s began (reset cause %s)" % (session, body["cause"])
        if was_online:
            detail += "; the previous session ended without a death notice"
        return detail

    def heartbeat(self, device: str, body: dict[str, Any]) -> bool:
        """True when something a regulator watches changed (valve, alarm, detector state)."""
        d = self._dev(device)
        before = (d.get("valve"), d.get("alarm"), [x.get("state") for x in d.get("dets", [])])
        d.update(
            valve=body["valve"],
            alarm=body["alarm"],
            uptime_s=body["up"],
            heap_free=body["heap"],
            pending_events=body["pending"],
            lost_events=body["lost"],
            loop=body["loop"],
            dets=body["dets"],
        )
        return before != (body["valve"], body["alarm"], [x["state"] for x in body["dets"]])

    def event(self, device: str, body: dict[str, Any]) -> bool:
        d = self._dev(device)
        if "valve" in body and d.get("valve") != body["valve"]:
            d["valve"] = body["valve"]
            return True
        return False

    def expire(self) -> list[tuple[str, str]]:
        """Devices silent for offline_after_s: (device, 'device.offline' detail) for each."""
        now = self.monotonic()
        out = []
        for dev, d in self.devices.items():
            if d["online"] and now - d["seen_at"] > self.offline_after_s:
                d["online"] = False
                out.append(
                    (
                        dev,
                        "no frame for %.0f s; session %s ended"
                        % (now - d["seen_at"], d.get("session", "unknown")),
                    )
                )
        return out

    # --- what is published -------------------------------------------------------------------

    def state(self, device: str) -> dict[str, Any]:
        d = self._dev(device)
        s: dict[str, Any] = {"online": d["online"], "last_seen": d["last_seen"]}
        for k in (
            "session", "instance", "boot", "reset_cause", "fw", "cfg", "valve_kind", "valve",
            "alarm", "uptime_s", "heap_free", "pending_events", "lost_events", "loop",
        ):  # fmt: skip
            if k in d:
                s[k] = d[k]
        meta = d.get("dets_meta", [])
        if "dets" in d:
            dets = []
            for i, x in enumerate(d["dets"]):
                e: dict[str, Any] = {"index": i, "state": x["state"], "errors": x["errors"]}
                if "lel" in x:  # a reading a regulator cannot use is flagged, never null
                    lel, why = cloudevents.reading(x["lel"])
                    if why is None:
                        e["lel"] = lel
                    else:
                        e["lel_invalid"] = why[:40]
                if i < len(meta):
                    e["gas"] = meta[i]["gas"]
                    e["address"] = meta[i]["addr"]
                dets.append(e)
            s["detectors"] = dets
        return s

    def state_event(self, device: str) -> dict[str, Any]:
        return cloudevents.device_state(self.site, device, self.state(device), self.clock())
