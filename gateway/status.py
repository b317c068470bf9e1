"""`gasguard gateway status`: the running gateway's counters as a short text page."""

from __future__ import annotations

from typing import Any


def render(st: dict[str, Any]) -> str:
    b = st["broker"]
    ev = st["events"]
    lat = st["publish_latency_ms"]
    lines = [
        "gateway %s at site %s, version %s, boot %d, up %.0f s"
        % (st["gateway"], st["site"], st["version"], st["boot"], st["uptime_s"]),
        "broker  %s: %s (%d connects)%s"
        % (
            b["url"],
            "connected" if b["connected"] else "DISCONNECTED",
            b["connects"],
            "; last error: %s" % b["last_error"] if b["last_error"] else "",
        ),
        "events  received %d, committed %d, duplicates %d, published %d, dropped %d"
        % (
            ev["received"],
            ev["committed"],
            ev["duplicates"],
            ev["published"],
            ev["dropped_by_retention"],
        ),  # fmt: skip
        "outbox  %d waiting; commit p99 %s ms; publish latency p50 %s ms, p99 %s ms,"
        " alarms p99 %s ms"
        % (
            st["outbox"]["depth"],
            st["outbox"]["commit_ms"]["p99"],
            lat["p50"],
            lat["p99"],
            lat["alarm_p99"],
        ),
        "frames  " + (", ".join("%s %d" % kv for kv in sorted(st["frames"].items())) or "none"),
        "devices %d online of %d" % (st["devices_online"], len(st["devices"])),
    ]
    for dev, d in st["devices"].items():
        lines.append(
            "  %-20s %-8s valve %-7s alarm %-5s session %s"
            % (dev, "online" if d["online"] else "OFFLINE", d["valve"], d["alarm"], d["session"])
        )
    return "\n".join(lines)
