"""`gasguard gateway status`: the running gateway's counters as a short text page."""

from __future__ import annotations

from typing import Any


def render(st: dict[str, Any]) -> str:
    b = st["broker"]
    ev = st["events"]
    lat = st["publish_latency_ms"]
    lines = [
        "gateway %s at site %s, version %s, instance %s boot %d, up %.0f s"
        % (st["gateway"], st["site"], st["version"], st.get("instance"), st["boot"],
           st["uptime_s"]),
        "broker  %s: %s (%d connects)%s"
        % (
            b["url"],
            "connected" if b["connected"] else "DISCONNECTED",
            b["connects"],
            "; last error: %s" % b["last_error"] if b["last_error"] else "",
        ),
        "events  received %d, committed %d, duplicates %d, published %d, refused %d, dropped %d"
        % (
            ev["received"],
            ev["committed"],
            ev["duplicates"],
            ev["published"],
            ev.get("refused", 0),
            ev["dropped_by_retention"],
        ),  # fmt: skip
        "outbox  %d waiting (%s); commit p99 %s ms; publish latency p50 %s ms, p99 %s ms,"
        " alarms p99 %s ms"
        % (
            st["outbox"]["depth"],
            st["outbox"].get("state", "ok"),
            st["outbox"]["commit_ms"]["p99"],
            lat["p50"],
            lat["p99"],
            lat["alarm_p99"],
        ),
        "frames  " + (", ".join("%s %d" % kv for kv in sorted(st["frames"].items())) or "none"),
        "devices %d online of %d" % (st["devices_online"], len(st["devices"])),
    ]
    refused = st["broker"].get("refused_topics")
    if refused:
        lines.append(
            "refused %s (held, tried again; %d state publishes refused)"
            % (", ".join(refused), st.get("states", {}).get("refused", 0))
        )
    if st.get("task_failures"):
        lines.append(
            "tasks   restarted: "
            + ", ".join("%s %d" % kv for kv in sorted(st["task_failures"].items()))
        )
    for dev, d in st["devices"].items():
        lines.append(
            "  %-20s %-8s instance %-16s valve %-7s alarm %-5s lost %s pending %s"
            % (dev, "online" if d["online"] else "OFFLINE", d.get("instance"), d["valve"],
               d["alarm"], d.get("lost"), d.get("pending"))
        )  # fmt: skip
    return "\n".join(lines)
