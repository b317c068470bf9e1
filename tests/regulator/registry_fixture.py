"""The registry's two tables as the shared contract gives them (nodes, units), for testing the
consoles' --district and the API's overview before the registry module lands. Delete this file
at merge: the registry's own TABLES make them then."""

from __future__ import annotations

CONTRACT_DDL = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, parent TEXT NULL, level TEXT NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    site TEXT PRIMARY KEY, name TEXT, address TEXT, gas TEXT, responsible TEXT, phone TEXT,
    node TEXT REFERENCES nodes (id), lat REAL NULL, lon REAL NULL);
"""

# a city, two districts, a street and a grid under the first: units hang at any level
NODES = [
    ("sh", None, "city", "Shanghai"),
    ("xuhui", "sh", "district", "Xuhui"),
    ("minhang", "sh", "district", "Minhang"),
    ("xuhui-tianping", "xuhui", "street", "Tianping Road"),
    ("xuhui-tianping-g3", "xuhui-tianping", "grid", "Grid 3"),
]


def make_registry(store, units: dict[str, str]) -> None:
    """units: site -> node id."""
    with store.transaction():
        for stmt in CONTRACT_DDL.split(";"):
            if stmt.strip():
                store.x(stmt)
        for n in NODES:
            store.x("INSERT INTO nodes VALUES (?, ?, ?, ?)", n)
        for site, node in units.items():
            store.x(
                "INSERT INTO units VALUES (?, ?, ?, 'natural_gas', ?, ?, ?, NULL, NULL)",
                (site, "Restaurant %s" % site, "1 Road", "Manager", "021-0000", node),
            )


def make_hazards(store, rows: list[tuple[str, str, str]]) -> None:
    """A stand-in hazards table (the contract's columns the overview reads): (site, status,
    deadline)."""
    with store.transaction():
        store.x(
            "CREATE TABLE IF NOT EXISTS hazards (id INTEGER PRIMARY KEY, source TEXT UNIQUE, "
            "site TEXT, subject TEXT, kind TEXT, severity TEXT, summary TEXT, status TEXT, "
            "responsible TEXT, deadline TEXT, opened_at TEXT, dispatched_at TEXT, "
            "rectified_at TEXT, verified_by TEXT, closed_at TEXT, closed_by TEXT, note TEXT)"
        )
        for n, (site, status, deadline) in enumerate(rows, 1):
            store.x(
                "INSERT INTO hazards (id, source, site, status, deadline) VALUES (?, ?, ?, ?, ?)",
                (n, "finding:%s:%d" % (site, n), site, status, deadline),
            )
