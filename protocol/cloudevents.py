# The regulator stream (docs/design.md §2.4): MQTT topics and CloudEvents 1.0 structured-JSON
# payloads. Every payload built here validates against the JSON Schemas in protocol/schemas/.

SPECVERSION = "1.0"
SCHEMA_EVENT = "urn:gasguard:schema:event:2"
SCHEMA_STATE = "urn:gasguard:schema:state:2"
SCHEMA_GATEWAY = "urn:gasguard:schema:gateway-status:1"
SCHEMA_REJECTED = "urn:gasguard:schema:rejected:1"
SCHEMA_COMMISSIONING = "urn:gasguard:schema:commissioning:1"

# device event kind -> CloudEvents type
EVENT_TYPES = {
    "alarm.low": "gasguard.alarm.low",
    "alarm.high": "gasguard.alarm.high",
    "alarm.clear": "gasguard.alarm.clear",
    "detector.fault": "gasguard.detector.fault",
    "detector.restored": "gasguard.detector.restored",
    "valve.closed": "gasguard.valve.closed",
    "valve.fault": "gasguard.valve.fault",
    "ack": "gasguard.alarm.acknowledged",
    "reset": "gasguard.valve.reset",
    "reset.refused": "gasguard.valve.reset_refused",
    "selftest": "gasguard.device.selftest",
    "tamper": "gasguard.device.tamper",
    "boot": "gasguard.device.boot",
    "events.lost": "gasguard.events.lost",
}
# events the gateway itself raises about a device or its own outbox
GATEWAY_EVENT_TYPES = {
    "device.online": "gasguard.device.online",
    "device.offline": "gasguard.device.offline",
    "outbox.dropped": "gasguard.outbox.dropped",
    "gateway.data_lost": "gasguard.gateway.data_lost",
}
TYPE_STATE = "gasguard.device.state"
TYPE_GATEWAY = "gasguard.gateway.status"
TYPE_REJECTED = "gasguard.gateway.rejected"
TYPE_COMMISSIONING = "gasguard.commissioning.record"
# a reading the regulator can use: finite and within what any detector can report (%LEL)
LEL_MIN = -20
LEL_MAX = 200
# a device clock the stream can carry: 2000-01-01 to 2100-01-01 (RFC 3339, four-digit years)
TIME_MIN = 946684800
TIME_MAX = 4102444800
# the gateway status's optional counts, and the bound on every count in it (a regulator's BIGINT
# holds it; a gateway past it says "at least")
STATUS_FIGURES = ("outbox", "refused", "dead_letters")
COUNT_MAX = 4294967295


def topic_events(site, device):
    return "gasguard/v1/%s/%s/events" % (site, device)


def topic_state(site, device):
    return "gasguard/v1/%s/%s/state" % (site, device)


def topic_gateway_status(site, gateway):
    return "gasguard/v1/%s/gateway/%s/status" % (site, gateway)


def topic_rejected(site, gateway):
    """Dead letters: device messages the gateway acknowledged but cannot publish as events."""
    return "gasguard/v1/%s/gateway/%s/rejected" % (site, gateway)


def topic_commissioning(site, device):
    """The device's signed commissioning record (issue 26), retained: the newest one the site's
    gateway holds."""
    return "gasguard/v1/%s/%s/commissioning" % (site, device)


def event_id(device, inst, boot, seq):
    """Stable across retries and restarts, and unique for ever: the board's instance id (made
    at its first boot) tells its life apart from a board before a flash erase or a swap, whose
    boot counter started at 1 too. Regulators dedupe on it."""
    return "%s:%s:%d:%d" % (device, inst, boot, seq)


def reading(v):
    """(lel, None) for a usable %LEL reading (rounded to 0.1), else (None, why): a device's
    non-finite or out-of-range number becomes a flagged fault value, never null."""
    if v != v or v in (float("inf"), float("-inf")):
        return None, "not a number" if v != v else "infinite"
    if not LEL_MIN <= v <= LEL_MAX:
        return None, "out of range (%.6g)" % v
    return round(v, 1), None


_DATE = (None, "")  # the last day formatted, and its "YYYY-MM-DD": a gateway formats one day
_LAST = (None, "")  # the last time formatted and its text (one tuple: threads read it whole)


def rfc3339(t):
    """Unix time (int or float seconds, UTC) -> 'YYYY-MM-DDTHH:MM:SS[.mmm]Z'."""
    global _LAST, _DATE
    last = _LAST
    if t == last[0]:  # an event's "time" and "received", and a read's events, share one
        return last[1]
    ms = int(round(t * 1000)) if isinstance(t, float) else t * 1000
    secs, ms = divmod(ms, 1000)
    days, rem = divmod(secs, 86400)
    date = _DATE
    if days != date[0]:
        date = _DATE = (days, _civil_date(days))
    s = "%sT%02d:%02d:%02d" % (date[1], rem // 3600, rem // 60 % 60, rem % 60)
    if ms:
        s += ".%03d" % ms
    s += "Z"
    _LAST = (t, s)
    return s


def _civil_date(days):
    """Days since 1970-01-01 -> 'YYYY-MM-DD' (Howard Hinnant's algorithm)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return "%04d-%02d-%02d" % (y, m, d)


def _envelope(site, subject, ce_type, ce_id, time, schema, data):
    return {
        "specversion": SPECVERSION,
        "id": ce_id,
        "source": "gasguard://%s/%s" % (site, subject),
        "type": ce_type,
        "time": rfc3339(time),
        "datacontenttype": "application/json",
        "dataschema": schema,
        "data": data,
    }


def device_event(site, device, inst, body, received):
    """A device event body (messages.event) of board instance `inst` -> CloudEvent.
    received: gateway unix time."""
    boot, seq = body["id"]
    data = {
        "site": site,
        "device": device,
        "instance": inst,
        "boot": boot,
        "seq": seq,
        "kind": body["kind"],
        "uptime_s": body["up"],
        "received": rfc3339(received),
    }
    renames = (("det", "detector"), ("valve", "valve"), ("detail", "detail"), ("n", "count"))
    for src, dst in renames:
        if src in body:
            data[dst] = body[src]
    if body.get("over"):
        data["over_range"] = True
    if "lel" in body:  # a single-precision device sends 62.5 exactly but 0.4 as 0.4000000059...
        lel, why = reading(body["lel"])
        if why is None:
            data["lel"] = lel
        else:
            data["lel_invalid"] = why
    t = body.get("time")
    if t is not None:
        if TIME_MIN <= t < TIME_MAX:
            data["device_time"] = rfc3339(t)
        else:  # a clock gone wrong: the event still counts, at the time the gateway got it
            data["device_time_invalid"] = t
            t = None
    return _envelope(
        site,
        device,
        EVENT_TYPES[body["kind"]],
        event_id(device, inst, boot, seq),
        received if t is None else t,
        SCHEMA_EVENT,
        data,
    )


def gateway_event(site, device, kind, ce_id, time, detail):
    """An event the gateway raises (device online/offline, outbox drops) -> CloudEvent."""
    data = {
        "site": site,
        "device": device,
        "kind": kind,
        "received": rfc3339(time),
        "detail": detail,
    }
    return _envelope(site, device, GATEWAY_EVENT_TYPES[kind], ce_id, time, SCHEMA_EVENT, data)


def rejected(site, gateway, device, reason, raw, received, ce_id):
    """A dead letter: a device message the gateway acknowledged (so the board moves on) but could
    not publish; `raw` is its CBOR body, carried as hex."""
    data = {
        "site": site,
        "gateway": gateway,
        "device": device,
        "reason": reason[:200],
        "body_hex": raw.hex(),
        "received": rfc3339(received),
    }
    return _envelope(
        site, "gateway/" + gateway, TYPE_REJECTED, ce_id, received, SCHEMA_REJECTED, data
    )


def device_state(site, device, state, time):
    """Retained device state. state: online, session, boot, fw, cfg, valve, alarm, detectors,
    loop, heap_free, last_seen (unix time)."""
    data = {"site": site, "device": device}
    data.update(state)
    if isinstance(data.get("last_seen"), (int, float)):
        data["last_seen"] = rfc3339(data["last_seen"])
    return _envelope(
        site,
        device,
        TYPE_STATE,
        "%s:state:%s" % (device, rfc3339(time)),
        time,
        SCHEMA_STATE,
        data,
    )


def gateway_status(site, gateway, online, time, version, devices_online=0, figures=None):
    """figures: optional counts, each a whole number (docs/protocol.md, "Regulator stream"):
    outbox (rows waiting in the durable outbox), refused (device frames refused since the
    gateway started), dead_letters (dead letters published since it started). A count past
    COUNT_MAX is sent as COUNT_MAX (the schema's bound: "at least that many")."""
    data = {
        "site": site,
        "gateway": gateway,
        "status": "online" if online else "offline",
        "version": version,
        "devices_online": min(devices_online, COUNT_MAX),
    }
    if figures:
        for k in STATUS_FIGURES:
            if k in figures:
                data[k] = min(figures[k], COUNT_MAX)
    return _envelope(
        site,
        "gateway/" + gateway,
        TYPE_GATEWAY,
        "%s:status:%s" % (gateway, rfc3339(time)),
        time,
        SCHEMA_GATEWAY,
        data,
    )


def commissioning(site, device, gateway, record, digest, received):
    """The signed commissioning record as the gateway carries it (retained, per device). The
    record travels as it was parsed; its signature covers its canonical JSON (protocol/record.py),
    not these bytes. digest: sha256 hex of those canonical bytes, the record's name."""
    data = {
        "site": site,
        "device": device,
        "gateway": gateway,
        "digest": digest,
        "received": rfc3339(received),
        "record": record,
    }
    return _envelope(
        site, device, TYPE_COMMISSIONING, "%s:record:%s" % (device, digest[:32]), received,
        SCHEMA_COMMISSIONING, data,
    )
