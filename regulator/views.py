"""What the consoles and the JSON API read from the store: read-only queries, no I/O of their own.

Every value from a user (a site, a district, a state, a limit) is a bound parameter or is
checked against a fixed set; no SQL text is built from input. The registry (`units`, `nodes`)
and the hazards table come from other modules and may be absent: a view that needs them says
so (NoRegistry) or leaves their figures out.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import audit, records

if TYPE_CHECKING:  # store.py takes this module's TABLES: it imports us, not the other way
    from .store import Store

# indexes for what the consoles ask often: what arrived since their last look, what is open
TABLES = """
CREATE INDEX IF NOT EXISTS events_ingested ON events (ingested_at);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (level, opened_at) WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at);
"""

STAGES = ("opened", "acknowledged", "cleared", "closed")  # regulator/incidents.py
STATES = ("open", "all", *STAGES)  # open: every stage but closed
GATEWAY_STATES = ("all", "online", "offline")
LIMIT_MAX = 1000
# a district and every node under it (UNION, not UNION ALL: a loop in the tree ends)
_UNDER = (
    "WITH RECURSIVE under_district(id) AS ("
    "SELECT id FROM nodes WHERE level = 'district' AND (id = ? OR name = ?) "
    "UNION SELECT n.id FROM nodes n JOIN under_district u ON n.parent = u.id) "
    "SELECT site FROM units WHERE node IN (SELECT id FROM under_district)"
)
# the sites of the units at a node of the tree and every node under it: a console account's scope
_SCOPE = (
    "WITH RECURSIVE under_node(id) AS (SELECT id FROM nodes WHERE id = ? "
    "UNION SELECT n.id FROM nodes n JOIN under_node u ON n.parent = u.id) "
    "SELECT site FROM units WHERE node IN (SELECT id FROM under_node)"
)
_SEVERITY = "CASE level WHEN 'high' THEN 0 ELSE 1 END"


class NoRegistry(ValueError):
    """--district asked of a database without the registry (units, nodes): exit 2 / HTTP 400."""


@dataclass(frozen=True)
class Filters:
    site: str | None = None
    district: str | None = None
    state: str = "open"
    scope: str | None = None  # a node: only the units under it (None: every site)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError("state: one of %s" % ", ".join(STATES))

    def where(self, has_registry: bool) -> tuple[str, list[Any]]:
        """AND clauses on a table with a `site` column, and their parameters."""
        sql, params = "", []
        if self.site is not None:
            sql += " AND site = ?"
            params.append(self.site)
        if self.district is not None:
            if not has_registry:
                raise NoRegistry(
                    "district: this database has no registry yet (gasguard regulator import)"
                )
            sql += " AND site IN (%s)" % _UNDER
            params += [self.district, self.district]
        if self.scope is not None:
            if not has_registry:
                raise NoRegistry(
                    "scope: this database has no registry yet (gasguard regulator import)"
                )
            sql += " AND site IN (%s)" % _SCOPE
            params.append(self.scope)
        return sql, params


def scope_sites(store: Store, scope: str | None) -> set[str] | None:
    """The sites a scope covers (None: all of them, the unregistered too)."""
    if scope is None:
        return None
    return {r[0] for r in store.x(_SCOPE, (scope,)).fetchall()}


def open_reader(url: str) -> Store:
    """The store, for reading: never makes a SQLite file where there was none."""
    from .store import NotOurDatabase, PostgresStore, is_postgres, open_store

    if not is_postgres(url) and "://" not in url:
        if not Path(url).is_file():
            raise NotOurDatabase("--db %s: no such database file" % url)
        with open(url, "rb") as f:  # say so here: SQLite's own error reads as a lost database
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise NotOurDatabase("--db %s: not a SQLite database" % url)
    store = open_store(url)
    if isinstance(store, PostgresStore):  # see snapshot_of
        import psycopg

        store.db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        store.db.read_only = True
    return store


@contextmanager
def snapshot_of(store: Store) -> Iterator[None]:
    """One consistent view for several queries (totals that agree with the lists), taking no
    write lock: SQLite's deferred BEGIN reads one snapshot in WAL mode; PostgreSQL's repeatable
    read does the same."""
    if store.placeholder == "%s":  # PostgreSQL: open_reader made its transactions so
        with store.transaction():
            yield
        return
    store.x("BEGIN")
    try:
        yield
    finally:
        store.x("COMMIT")


def has_registry(store: Store, have: set[str]) -> bool:
    """Whether a registry was imported: its tables exist (made by the store) and hold a tree."""
    return {"units", "nodes"} <= have and bool(store.x("SELECT 1 FROM nodes LIMIT 1").fetchall())


def tables(store: Store) -> set[str]:
    return store.table_names()


def fingerprint(store: Store) -> tuple:
    """Changes when anything a console shows has changed: what arrived, gateway status, rejected
    messages, retained device state, a triage (the live page's verdicts). Cheap (indexed maxima,
    one scan of devices)."""
    row = store.x(
        "SELECT (SELECT max(ingested_at) FROM events), (SELECT max(updated_at) FROM gateways), "
        "(SELECT max(last_at) FROM rejected), (SELECT max(state_time) FROM devices), "
        "(SELECT count(*) FROM devices), (SELECT count(*) FROM dead_letters), "
        "(SELECT max(at) FROM alarm_triage)"
    ).fetchone()
    return tuple(row)


def now() -> str:
    from .store import now

    return now()


def seconds_between(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    ta = datetime.datetime.fromisoformat(a.replace("Z", "+00:00"))
    tb = datetime.datetime.fromisoformat(b.replace("Z", "+00:00"))
    return round((tb - ta).total_seconds(), 3)


def incident_row(r: dict[str, Any], at: str) -> dict[str, Any]:
    r = dict(r)
    r["detectors"] = json.loads(r["detectors"])
    o = r["opened_at"]
    r["age_s"] = seconds_between(o, r["closed_at"] or at)
    for step in ("valve_closed", "acknowledged", "cleared", "reset", "closed"):
        r["to_%s_s" % step] = seconds_between(o, r["%s_at" % step])
    return r


INCIDENT_FIELDS = (
    "open_event, site, device, ordinal, level, stage, detectors, peak_lel, opened_at, "
    "valve_closed_at, acknowledged_at, cleared_at, reset_at, closed_at"
)


def incidents(
    store: Store,
    f: Filters,
    limit: int,
    have: set[str] | None = None,
    oldest_first: bool = True,
    by_severity: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """The incidents f asks for, most severe then oldest first (by_severity=False: by time
    alone), and how many there are."""
    have = tables(store) if have is None else have
    where, params = f.where(has_registry(store, have))
    if f.state == "open":
        where += " AND closed_at IS NULL"
    elif f.state != "all":
        where += " AND stage = ?"
        params.append(f.state)
    total = store.x("SELECT count(*) FROM incidents WHERE 1=1" + where, params).fetchone()[0]
    rows = store.rows(
        "SELECT %s FROM incidents WHERE 1=1%s ORDER BY %sopened_at %s, open_event LIMIT ?"
        % (
            INCIDENT_FIELDS,
            where,
            _SEVERITY + ", " if by_severity else "",
            "ASC" if oldest_first else "DESC",
        ),
        [*params, limit],
    )
    at = now()
    return [incident_row(r, at) for r in rows], total


def snapshot(store: Store, f: Filters, limit: int = 50) -> dict[str, Any]:
    """What `regulator watch` shows: totals, sites and gateways offline, incidents."""
    have = tables(store)
    registry = has_registry(store, have)
    where, params = f.where(registry)
    with snapshot_of(store):
        dev = store.x(
            "SELECT count(*), count(DISTINCT site), "
            "COALESCE(sum(CASE WHEN online = 1 THEN 1 ELSE 0 END), 0), "
            "COALESCE(sum(CASE WHEN online = 0 THEN 1 ELSE 0 END), 0), "
            "CAST(COALESCE(sum(lost), 0) AS BIGINT) "
            "FROM devices WHERE 1=1" + where,
            params,
        ).fetchone()
        units = None
        if registry:
            units = store.x("SELECT count(*) FROM units WHERE 1=1" + where, params).fetchone()[0]
        levels = dict(
            store.x(
                "SELECT level, count(*) FROM incidents WHERE closed_at IS NULL%s GROUP BY level"
                % where,
                params,
            ).fetchall()
        )
        sites_off = store.rows(
            "SELECT site, count(*) AS devices, max(online_time) AS since FROM devices "
            "WHERE 1=1%s GROUP BY site HAVING min(online) = 0 AND max(online) = 0 "
            "ORDER BY since, site" % where,
            params,
        )
        gws = store.rows(
            "SELECT site, gateway, online, version, status_time AS since FROM gateways "
            "WHERE 1=1%s ORDER BY status_time, site, gateway" % where,
            params,
        )
        dead = store.x("SELECT count(*) FROM dead_letters WHERE 1=1" + where, params).fetchone()
        rejected = store.x(
            "SELECT count(*), CAST(COALESCE(sum(times), 0) AS BIGINT), max(last_at) FROM rejected"
        ).fetchone()
        listed, total = incidents(store, f, limit, have)
    gws_off = [g for g in gws if not g["online"]]
    return {
        "at": now(),
        "filters": {"site": f.site, "district": f.district, "state": f.state},
        "totals": {
            "units": units,
            "sites": dev[1],
            "devices": dev[0],
            "online": dev[2],
            "offline": dev[3],
            "unknown": dev[0] - dev[2] - dev[3],  # no state or presence event seen yet
            "lost_events": dev[4],
            "open_incidents": {"high": levels.get("high", 0), "low": levels.get("low", 0)},
            "gateways": len(gws),
            "gateways_offline": len(gws_off),
            "rejected": {"messages": rejected[1], "distinct": rejected[0], "last": rejected[2]},
            "dead_letters": dead[0],  # what a gateway could not publish (it says why)
        },
        "sites_offline": sites_off,
        "gateways_offline": [
            {k: g[k] for k in ("site", "gateway", "version", "since")} for g in gws_off
        ],
        "incidents": listed,
        "incidents_total": total,
    }


def sites(store: Store, f: Filters, limit: int, offset: int = 0) -> dict[str, Any]:
    """Each site with its devices online and open incidents (and its unit, if registered)."""
    have = tables(store)
    registry = has_registry(store, have)
    where, params = f.where(registry)
    with snapshot_of(store):
        total = store.x(
            "SELECT count(DISTINCT site) FROM devices WHERE 1=1" + where, params
        ).fetchone()[0]
        rows = store.rows(
            "SELECT site, count(*) AS devices, "
            "COALESCE(sum(CASE WHEN online = 1 THEN 1 ELSE 0 END), 0) AS online, "
            "max(last_seen) AS last_seen FROM devices WHERE 1=1%s "
            "GROUP BY site ORDER BY site LIMIT ? OFFSET ?" % where,
            [*params, limit, offset],
        )
        names = [r["site"] for r in rows]
        open_ = _per_site(store, "SELECT site, count(*) FROM incidents WHERE closed_at IS NULL "
                          "AND site IN (%s) GROUP BY site", names)  # fmt: skip
        units = {}
        if registry and names:
            for u in store.rows(
                "SELECT site, name, node FROM units WHERE site IN (%s)"
                % ",".join("?" * len(names)),
                names,
            ):
                units[u["site"]] = u
    for r in rows:
        r["open_incidents"] = open_.get(r["site"], 0)
        u = units.get(r["site"])
        r["name"], r["node"] = (u["name"], u["node"]) if u else (None, None)
    return {"total": total, "sites": rows}


def _per_site(store: Store, sql: str, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    return dict(store.x(sql % ",".join("?" * len(names)), names).fetchall())


def site(store: Store, name: str, limit: int, scope: str | None = None) -> dict[str, Any] | None:
    """One site: its unit (if registered), devices, gateways and latest incidents. None: no
    such site, or not under scope."""
    have = tables(store)
    with snapshot_of(store):
        if scope is not None and name not in (scope_sites(store, scope) or set()):
            return None
        devices = store.rows(
            "SELECT device, online, online_time, last_seen, lost, fw, valve, alarm "
            "FROM devices WHERE site = ? ORDER BY device",
            (name,),
        )
        gateways = store.rows(
            "SELECT %s FROM gateways WHERE site = ? ORDER BY gateway" % GATEWAY_FIELDS, (name,)
        )
        _gateway_figures(store, gateways)
        unit = None
        if "units" in have:
            got = store.rows("SELECT * FROM units WHERE site = ?", (name,))
            unit = got[0] if got else None
        listed, total = incidents(store, Filters(site=name, state="all"), limit, have, False)
        # commissioning records (issue 26): the one that counts per device, then the others
        commissioning = records.for_site(store, name) if "commissioning_records" in have else []
    if not devices and not gateways and unit is None:
        return None
    return {
        "site": name,
        "unit": unit,
        "devices": devices,
        "gateways": gateways,
        "incidents": listed,
        "incidents_total": total,
        "commissioning": commissioning,
    }


GATEWAY_FIELDS = (
    "site, gateway, online, version, devices_online, outbox, refused, dead_letters, last_seen, "
    "status_time, updated_at"
)


def gateways(store: Store, f: Filters, online: str, limit: int) -> dict[str, Any]:
    """online: all, online or offline (f's own state is about incidents). Trouble first:
    offline, then the deepest outbox (an older gateway's unknown depth last). Each gateway
    with what the regulator holds from it: `dead_letters_stored` (its rows in dead_letters),
    `rejected` and `rejected_messages` (distinct messages in `rejected` on its site's topics,
    and how often they came), and `last_seen`: the newer of its last status's time and the
    last time any board of its site was heard (the boards' state and events come through
    it: a quiet gateway publishes no status while its counts stand still)."""
    where, params = f.where(has_registry(store, tables(store)))
    if online not in GATEWAY_STATES:
        raise ValueError("state: %s" % ", ".join(GATEWAY_STATES))
    if online != "all":
        where += " AND online = ?"
        params.append(int(online == "online"))
    with snapshot_of(store):
        total = store.x("SELECT count(*) FROM gateways WHERE 1=1" + where, params).fetchone()[0]
        rows = store.rows(
            "SELECT %s FROM gateways WHERE 1=1%s ORDER BY online, COALESCE(outbox, -1) DESC, "
            "status_time, site, gateway LIMIT ?" % (GATEWAY_FIELDS, where),
            [*params, limit],
        )
        _gateway_figures(store, rows)
    return {"total": total, "gateways": rows}


def _gateway_figures(store: Store, rows: list[dict[str, Any]]) -> None:
    """The regulator's own counts for the listed gateways, a query each for all of them (the
    primary keys and rejected's site index serve them)."""
    sites = sorted({r["site"] for r in rows})
    dead: dict[tuple[str, str], int] = {}
    refused: dict[str, tuple[int, int, str | None]] = {}
    heard: dict[str, str | None] = {}
    if sites:
        in_sites, p = store.in_list(sites)
        for site, gw, n in store.x(
            "SELECT site, gateway, count(*) FROM dead_letters WHERE site IN %s "
            "GROUP BY site, gateway" % in_sites, (p,)
        ).fetchall():
            dead[(site, gw)] = n
        for site, n, times, last in store.x(
            "SELECT site, count(*), CAST(sum(times) AS BIGINT), max(last_at) FROM rejected "
            "WHERE site IN %s GROUP BY site" % in_sites, (p,)
        ).fetchall():
            refused[site] = (n, times, last)
        heard = dict(store.x(
            "SELECT site, max(last_seen) FROM devices WHERE site IN %s GROUP BY site" % in_sites,
            (p,),
        ).fetchall())  # fmt: skip
    for r in rows:
        r["online"] = bool(r["online"])
        r["dead_letters_stored"] = dead.get((r["site"], r["gateway"]), 0)
        n, times, last = refused.get(r["site"], (0, 0, None))
        r["rejected"], r["rejected_messages"], r["rejected_last"] = n, times, last
        r["status_last_seen"] = r["last_seen"]  # from its statuses alone
        r["last_seen"] = max((t for t in (r["last_seen"], heard.get(r["site"])) if t),
                             default=None)  # fmt: skip


def rejected(store: Store, limit: int) -> dict[str, Any]:
    """The refused messages, latest first: what a rogue or broken publisher sent."""
    with snapshot_of(store):
        total = store.x(
            "SELECT count(*), CAST(COALESCE(sum(times), 0) AS BIGINT) FROM rejected"
        ).fetchone()
        rows = store.rows(
            "SELECT topic, reason, bytes, excerpt, first_at, last_at, times FROM rejected "
            "ORDER BY last_at DESC, topic, digest LIMIT ?",
            (limit,),
        )
    return {"distinct": total[0], "messages": total[1], "rejected": rows}


def districts(store: Store) -> dict[str, str | None]:
    """Each node's district (itself, or the district above it), from the registry's tree."""
    nodes = {r[0]: (r[1], r[2]) for r in store.x("SELECT id, parent, level FROM nodes").fetchall()}
    out: dict[str, str | None] = {}
    for start in nodes:
        seen, at = set(), start
        while at in nodes and at not in seen and nodes[at][1] != "district":
            seen.add(at)
            at = nodes[at][0]
        out[start] = at if at in nodes and nodes[at][1] == "district" else None
    return out


# each unit's district: its node's, or the nearest district above it
UNIT_DISTRICT = (
    "WITH RECURSIVE under(id, district) AS ("
    "SELECT id, id FROM nodes WHERE level = 'district' "
    "UNION SELECT n.id, u.district FROM nodes n JOIN under u ON n.parent = u.id "
    "WHERE n.level <> 'district'), "
    "unit_district(site, district) AS ("
    "SELECT s.site, u.district FROM units s LEFT JOIN under u ON u.id = s.node) "
)


STALE_S = 300  # an open alarm nobody acknowledged for this long is "unacknowledged"


def overview(store: Store, scope: str | None = None, stale_s: float = STALE_S) -> dict[str, Any]:
    """Counts per district: units, devices online, open alarms and those nobody acknowledged
    for stale_s, overdue hazards, and units compliant (no open finding: their share is the
    compliance rate, None without units). Sites no unit names are counted under district
    null. scope: only the units under that node. The database counts per node (a city's
    100,000 device rows summed in Python took most of 250 ms); the nodes, a thousand or so,
    are summed into their districts here (districts()), where a recursive CTE giving each of
    50,000 units its district, once per count, took 300 ms on SQLite."""
    have = tables(store)
    registry = has_registry(store, have)
    # each row's unit's node (NULL: no unit names the site)
    join, node = (" LEFT JOIN units u ON u.site = t.site", "u.node") if registry else ("", "NULL")
    # a scope keeps the units under its node (none without a registry)
    where, wp = ("", []) if scope is None else (" AND t.site IN (%s)" % _SCOPE, [scope])
    if scope is not None and not registry:
        where, wp = " AND 1 = 0", []
    group = " GROUP BY u.node" if registry else ""  # without a registry: one row
    with snapshot_of(store):
        devs = store.x(
            "SELECT %s, count(*), COALESCE(sum(CASE WHEN t.online = 1 THEN 1 ELSE 0 END), 0) "
            "FROM devices t%s WHERE 1 = 1%s%s" % (node, join, where, group),
            wp,
        ).fetchall()
        alarms = store.x(
            "SELECT %s, count(*) FROM incidents t%s WHERE t.closed_at IS NULL%s%s"
            % (node, join, where, group),
            wp,
        ).fetchall()
        stale_before = audit.spell(
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=stale_s))
        unacked = store.x(
            "SELECT %s, count(*) FROM incidents t%s WHERE t.closed_at IS NULL "
            "AND t.acknowledged_at IS NULL AND t.opened_at < ?%s%s" % (node, join, where, group),
            [stale_before, *wp],
        ).fetchall()
        overdue = None
        if "hazards" in have:
            overdue = store.x(
                "SELECT %s, count(*) FROM hazards t%s WHERE t.status <> 'closed' "
                "AND t.deadline IS NOT NULL AND t.deadline < ?%s%s" % (node, join, where, group),
                [now(), *wp],
            ).fetchall()
        units: list = []
        names: dict[str, str] = {}
        of: dict[str, str | None] = {}
        if registry:
            units = store.x(
                "SELECT t.node, count(*), COALESCE(sum(CASE WHEN EXISTS (SELECT 1 FROM findings f "
                "WHERE f.site = t.site AND f.cleared_at IS NULL) THEN 0 ELSE 1 END), 0) "
                "FROM units t WHERE 1 = 1%s GROUP BY t.node" % where, wp
            ).fetchall()
            names = dict(store.x("SELECT id, name FROM nodes WHERE level = 'district'").fetchall())
            of = districts(store)
    rows: dict[str | None, dict[str, Any]] = {}

    def row(d: str | None) -> dict[str, Any]:
        if d not in rows:
            rows[d] = {"district": d, "name": names.get(d) if d else None, "units": 0,
                       "compliant_units": 0, "devices": 0, "online": 0, "open_alarms": 0,
                       "unacknowledged": 0}  # fmt: skip
            if overdue is not None:
                rows[d]["overdue_hazards"] = 0
        return rows[d]

    for nd, n, fine in units:
        r = row(of.get(nd))
        r["units"] += n
        r["compliant_units"] += fine
    for nd, n, online in devs:
        if n:  # without a registry: one row, empty when there are no devices
            r = row(of.get(nd))
            r["devices"] += n
            r["online"] += online
    for nd, n in alarms:
        if n:
            row(of.get(nd))["open_alarms"] += n
    for nd, n in unacked:
        if n:
            row(of.get(nd))["unacknowledged"] += n
    for nd, n in overdue or []:
        if n:
            row(of.get(nd))["overdue_hazards"] += n
    listed = sorted(rows.values(), key=lambda r: (r["district"] is None, r["district"] or ""))
    counted = ["units", "compliant_units", "devices", "online", "open_alarms", "unacknowledged"]
    counted += ["overdue_hazards"] if overdue is not None else []
    totals = {k: sum(r[k] for r in listed) for k in counted}
    for r in [*listed, totals]:
        r["compliance_rate"] = round(r["compliant_units"] / r["units"], 4) if r["units"] else None
    return {"at": now(), "registry": registry, "districts": listed, "totals": totals,
            "stale_s": stale_s}  # fmt: skip
