"""Prometheus metrics at /metrics (prometheus-client's registry and text format).

Everything is read from the gateway's own counters when Prometheus scrapes, nothing is counted
twice on the hot path: a frame or an event costs no metrics call. The one distribution, publish
latency (commit to PUBACK), goes into fixed buckets as each PUBACK arrives (a bisect).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

if TYPE_CHECKING:
    from .service import Gateway

# seconds, commit to PUBACK: an alarm's budget is tens of milliseconds, a backlog minutes
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class LatencyHistogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.bounds_ms = [b * 1000 for b in buckets]
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum_s = 0.0

    def observe_ms(self, ms: float) -> None:
        self.counts[bisect_left(self.bounds_ms, ms)] += 1
        self.sum_s += ms / 1000

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cum, out = 0, []
        for b, n in zip(self.buckets, self.counts, strict=False):
            cum += n
            out.append((repr(b), cum))
        out.append(("+Inf", cum + self.counts[-1]))
        return HistogramMetricFamily(name, doc, buckets=out, sum_value=self.sum_s)


class _Collector:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self):
        gw = self.gw
        p = gw.publisher
        frames = CounterMetricFamily(
            "gasguard_gateway_frames", "Frames from devices by result", labels=["result"]
        )
        for result, n in sorted(gw.frames.items()):
            frames.add_metric([result], n)
        yield frames
        yield GaugeMetricFamily(
            "gasguard_gateway_outbox_depth", "Events in the outbox, not yet published",
            value=gw.outbox.depth(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "gasguard_gateway_outbox_blocked", "1 while commits wait for disk space",
            value=1 if gw.committer.blocked else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "gasguard_gateway_events_committed", "Events committed to the outbox",
            value=gw.committer.committed,
        )  # fmt: skip
        yield CounterMetricFamily(
            "gasguard_gateway_events_published", "Events the broker acknowledged",
            value=p.published,
        )  # fmt: skip
        yield CounterMetricFamily(
            "gasguard_gateway_publishes_refused",
            "Publishes the broker refused (MQTT 5 reason code); the events stay in the outbox",
            value=p.refusals.events,
        )
        yield CounterMetricFamily(
            "gasguard_gateway_states_refused",
            "Retained device states the broker refused (MQTT 5 reason code); kept, tried again",
            value=p.refusals.states,
        )
        yield GaugeMetricFamily(
            "gasguard_gateway_topics_refused",
            "Topics the broker refuses now (the last try was refused), held while others go",
            value=len(p.refusals.spells),
        )
        yield gw.http.metrics.latency.family(
            "gasguard_gateway_publish_latency_seconds", "Outbox commit to broker PUBACK"
        )
        yield GaugeMetricFamily(
            "gasguard_gateway_links", "Device links open", value=sum(gw.links_up.values())
        )
        yield GaugeMetricFamily(
            "gasguard_gateway_devices_online", "Devices online", value=gw.health.online_count()
        )
        yield GaugeMetricFamily(
            "gasguard_gateway_broker_connected", "1 while connected to the broker",
            value=1 if p.connected else 0,
        )  # fmt: skip
        failures = CounterMetricFamily(
            "gasguard_gateway_task_failures", "Task failures (each restarted)", labels=["task"]
        )
        for task, n in sorted(gw.task_failures.items()):
            failures.add_metric([task], n)
        yield failures


class Metrics:
    def __init__(self, gw: Gateway) -> None:
        self.latency = LatencyHistogram()
        gw.publisher.on_latency = self.latency.observe_ms
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(gw))  # type: ignore[arg-type]

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
