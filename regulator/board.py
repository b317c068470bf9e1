"""The compliance board: each unit's open findings, the checklist's five as regulator/compliance.py
computes and names them, one row a unit. Units with the most kinds of finding first, then the
longest outstanding: what a district's officer visits first. Read-only and scoped like every
view (regulator/views.py); a page at a time."""

from __future__ import annotations

from typing import Any

from . import views
from .compliance import KINDS


def board(store: Any, f: views.Filters, kind: str | None, limit: int,
          offset: int = 0) -> dict[str, Any]:  # fmt: skip
    """{units_total, with_findings, counts {kind: units}, total, units: [{site, name,
    district, district_name, kinds, since, findings {kind: [{subject, detail, since}]}}]}:
    f's scope and district, only the units with an open `kind` finding if kind is given."""
    if kind is not None and kind not in KINDS:
        raise ValueError("finding: one of %s" % ", ".join(KINDS))
    have = views.tables(store)
    registry = views.has_registry(store, have)
    where, params = f.where(registry)
    open_ = " FROM findings WHERE cleared_at IS NULL" + where
    chosen, cp = open_, list(params)
    if kind is not None:
        chosen += " AND site IN (SELECT site FROM findings WHERE cleared_at IS NULL AND kind = ?)"
        cp.append(kind)
    out: dict[str, Any] = {"units_total": None, "with_findings": 0, "kinds": list(KINDS),
                           "counts": dict.fromkeys(KINDS, 0), "total": 0, "units": []}  # fmt: skip
    with views.snapshot_of(store):
        if registry:
            out["units_total"] = store.x("SELECT count(*) FROM units WHERE 1=1" + where,
                                         params).fetchone()[0]  # fmt: skip
        for k, n in store.x("SELECT kind, count(DISTINCT site)%s GROUP BY kind" % open_, params):
            if k in out["counts"]:
                out["counts"][k] = n
        out["with_findings"] = store.x("SELECT count(DISTINCT site)" + open_,
                                       params).fetchone()[0]  # fmt: skip
        out["total"] = store.x("SELECT count(DISTINCT site)" + chosen, cp).fetchone()[0]
        page = store.rows(
            "SELECT site, count(DISTINCT kind) AS kinds, min(since) AS since%s GROUP BY site "
            "ORDER BY count(DISTINCT kind) DESC, min(since), site LIMIT ? OFFSET ?" % chosen,
            [*cp, limit, offset],
        )
        sites = [r["site"] for r in page]
        if not sites:
            return out
        among, listed = store.in_list(sites)
        found = store.rows(
            "SELECT site, subject, kind, detail, since FROM findings WHERE cleared_at IS NULL "
            "AND site IN %s ORDER BY site, kind, since, subject" % among,
            [listed],
        )
        units, names = {}, {}
        if registry:
            units = {r["site"]: r for r in store.rows(
                views.UNIT_DISTRICT + "SELECT u.site, u.name, d.district FROM units u "
                "LEFT JOIN unit_district d ON d.site = u.site WHERE u.site IN " + among,
                [listed])}  # fmt: skip
            names = dict(store.x("SELECT id, name FROM nodes WHERE level = 'district'"))
    by_site: dict[str, dict[str, list]] = {}
    for r in found:
        by_site.setdefault(r["site"], {}).setdefault(r["kind"], []).append(
            {"subject": r["subject"], "detail": r["detail"], "since": r["since"]}
        )
    for r in page:
        u = units.get(r["site"], {})
        out["units"].append({
            "site": r["site"], "name": u.get("name"), "district": u.get("district"),
            "district_name": names.get(u.get("district")), "kinds": r["kinds"],
            "since": r["since"], "findings": by_site.get(r["site"], {}),
        })  # fmt: skip
    return out


def districts_seen(store: Any, scope: str | None) -> list[dict[str, str]]:
    """The districts an account's units are in (the board's district filter offers these)."""
    if not views.has_registry(store, views.tables(store)):
        return []
    where, params = views.Filters(state="all", scope=scope).where(True)
    return store.rows(
        views.UNIT_DISTRICT + "SELECT DISTINCT n.id, n.name FROM unit_district ud "
        "JOIN nodes n ON n.id = ud.district WHERE 1=1%s ORDER BY n.id" % where,
        params,
    )
