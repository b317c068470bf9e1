"""`gasguard gateway status`: the running gateway's counters as a short text page."""

from __future__ import annotations

from typing import Any

MISSING = "—"  # a figure not measured yet (no alarm published since the start): never "None"


def _ms(value: Any) -> str:
    return MISSING if value is None else "%s ms" % value


def _or_missing(value: Any) -> Any:
    return MISSING if value is None else value


def render(st: dict[str, Any]) -> str:
    b = st["broker"]
    ev = st["events"]
    lat = st["publish_latency_ms"]
    lines = [
        "gateway %s at site %s, version %s, instance %s boot %d, up %.0f s"
        % (
            st["gateway"],
            st["site"],
            st["version"],
            _or_missing(st.get("instance")),
            st["boot"],
            st["uptime_s"],
        ),
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
        "outbox  %d waiting (%s); commit p99 %s; publish latency p50 %s, p99 %s, alarms p99 %s"
        % (
            st["outbox"]["depth"],
            st["outbox"].get("state", "ok"),
            _ms(st["outbox"]["commit_ms"]["p99"]),
            _ms(lat["p50"]),
            _ms(lat["p99"]),
            "— (no alarms yet)" if lat["alarm_p99"] is None else _ms(lat["alarm_p99"]),
        ),
        "frames  " + (", ".join("%s %d" % kv for kv in sorted(st["frames"].items())) or "none"),
        "devices %d online of %d" % (st["devices_online"], len(st["devices"])),
    ]
    rec = st.get("records")  # an older gateway's status has none
    if rec and rec["held"]:
        lines.append("records commissioning records for %s; %d published since start "
                     "(`gasguard gateway record list`)"
                     % (", ".join(rec["held"]), rec["published"]))  # fmt: skip
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
            % (dev, "online" if d["online"] else "OFFLINE",
               *(_or_missing(d.get(k)) for k in ("instance", "valve", "alarm", "lost", "pending")))
        )  # fmt: skip
    return "\n".join(lines)
