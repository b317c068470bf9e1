"""A small jurisdiction tree and its units written straight into the registry's tables (and
hazards into the ledger's), for the consoles' and the API's district tests."""

from __future__ import annotations

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
        for n in NODES:
            store.x("INSERT INTO nodes (id, parent, level, name) VALUES (?, ?, ?, ?)", n)
        for site, node in units.items():
            store.x(
                "INSERT INTO units (site, name, address, gas, responsible, phone, node) "
                "VALUES (?, ?, ?, 'natural_gas', ?, ?, ?)",
                (site, "Restaurant %s" % site, "1 Road", "Manager", "021-0000", node),
            )


def make_hazards(store, rows: list[tuple[str, str, str]]) -> None:
    """Hazards in the ledger's table: (site, status, deadline)."""
    with store.transaction():
        for n, (site, status, deadline) in enumerate(rows, 1):
            store.x(
                "INSERT INTO hazards (id, source, site, kind, severity, summary, status, "
                "deadline, opened_at) VALUES (?, ?, ?, 'not_working', 'normal', 'test', ?, ?, ?)",
                (n, "finding:%s/%d" % (site, n), site, status, deadline, deadline),
            )
