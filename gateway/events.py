"""A device event on its way to the regulator: its CloudEvent checked against the schema and
encoded, or, when that cannot be done, a dead letter with the reason and the raw body (either way
an outbox item, so the device is acknowledged once it is durable and does not re-send it for
ever). Pure: the gateway and the fuzz target over the receive path both use it."""

from __future__ import annotations

from gasguard.protocol import cloudevents

from . import schemas
from .outbox import ALARM, ROUTINE, URGENT, Item
from .publisher import dumps
from .session import Message

# urgent: the valve closed or failed, gas at the high alarm level (the valve must close), a
# kitchen without gas detection (a detector fault); a low alarm warns, and waits for those
# (docs/design.md §5). The regulator gets every one in order per device either way.
PRIORITY = {"alarm.high": URGENT, "valve.closed": URGENT, "valve.fault": URGENT,
            "detector.fault": URGENT, "alarm.low": ALARM}  # fmt: skip


def event_item(
    site: str, gateway_id: str, m: Message, inst: str, now: float
) -> tuple[Item, str | None]:
    """(the outbox item, None) for a publishable event, else (a dead letter, the reason)."""
    dev, b = m.device, m.body
    prio = PRIORITY.get(b["kind"], ROUTINE)
    try:
        ce = schemas.check(cloudevents.device_event(site, dev, inst, b, now))
        return Item(ce["id"], dev, cloudevents.topic_events(site, dev), dumps(ce), prio), None
    except (schemas.SchemaError, ValueError, TypeError, OverflowError) as e:
        reason = str(e) or type(e).__name__
    ce_id = cloudevents.event_id(dev, inst, b["id"][0], b["id"][1]) + ":rejected"
    ce = schemas.check(cloudevents.rejected(site, gateway_id, dev, reason, m.raw, now, ce_id))
    return Item(ce_id, dev, cloudevents.topic_rejected(site, gateway_id), dumps(ce), prio), reason
