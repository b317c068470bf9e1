"""The status JSON: what the gateway, its broker connection, outbox, devices and links are
doing, from the counters each part keeps."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Gateway


def percentile(xs: Any, q: float) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def status(gw: Gateway) -> dict[str, Any]:
    """The gateway's counters as /status serves them (`gasguard gateway status` renders them)."""
    p = gw.publisher
    return {
        "gateway": gw.cfg.gateway_id,
        "site": gw.cfg.site,
        "version": p.version,
        "boot": gw.boot,
        "instance": gw.instance,
        "uptime_s": round(time.monotonic() - gw.started, 1),
        "broker": {
            "url": p.cfg.url,
            "connected": p.connected,
            "connects": p.connects,
            "last_error": p.last_error,
            "receive_maximum": p.receive_maximum,
            "window": p.window,
            "inflight_peak": p.inflight_peak,
            "refused_topics": sorted(p.refusals.spells),  # held: the last try was refused
            "statuses": p.statuses,  # online statuses published (connects, counts changed)
        },  # fmt: skip
        "states": {"refused": p.refusals.states},  # retained device states (records too)
        # commissioning records: each device's newest, and how many PUBACKs came back since start
        "records": {"held": sorted(p.records), "published": p.records_published},
        "frames": dict(gw.frames),
        "events": {
            "received": gw.ingest.events_in,
            "committed": gw.committer.committed,
            "duplicates": gw.committer.duplicates,
            "published": p.published,
            "refused": p.refusals.events,
            "refused_by_reason": dict(p.refusals.by_reason),
            "dropped_by_retention": gw.dropped_by_retention,
            "dead_letters": p.dead_letters,  # published (the broker acknowledged them)
        },
        "outbox": {
            "depth": gw.outbox.depth(),
            "state": gw.committer.blocked or "ok",
            "data_lost": gw.data_lost,  # at this start: a damaged outbox or lost commits
            "commit_ms": {
                "p50": percentile(gw.committer.commit_ms, 0.5),
                "p99": percentile(gw.committer.commit_ms, 0.99),
            },
        },
        "publish_latency_ms": {
            "p50": percentile(p.latency_ms, 0.5),
            "p99": percentile(p.latency_ms, 0.99),
            "alarm_p99": percentile(p.alarm_latency_ms, 0.99),
        },
        "devices": {
            d: {
                "online": s["online"],
                "session": s.get("session"),
                "instance": s.get("instance"),
                "valve": s.get("valve"),
                "alarm": s.get("alarm"),
                "pending": s.get("pending_events"),
                "lost": s.get("lost_events"),  # the board's heartbeat "lost"
            }
            for d, s in sorted(gw.health.devices.items())
        },
        "devices_online": gw.health.online_count(),
        "links": dict(gw.links_up),
        "links_open": sum(1 for up in gw.links_up.values() if up),
        "links_unauthenticated": len(gw.links.unauth),
        "links_shed": dict(gw.links.shed_count),
        "task_failures": dict(gw.task_failures),
    }
