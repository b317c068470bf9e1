"""A regulator database for the web console's tests: a small city with its registry (a city, two
districts, a street and its grid), open alarms, hazards raised from them, and accounts.

    site-0000 → xuhui (district)      site-0001 → xuhui-tianping-g3 (grid of the street)
    site-0002, site-0003 → minhang    site-0004.. → no unit (only the city's accounts see them)
"""

from __future__ import annotations

import datetime
import re

from gasguard.regulator import hazards
from gasguard.regulator.store import now, open_store
from gasguard.regulator.web import accounts

from .city import build_city
from .city_registry import make_registry

PASSWORD = "correct horse battery"
UNITS = {"site-0000": "xuhui", "site-0001": "xuhui-tianping-g3",
         "site-0002": "minhang", "site-0003": "minhang"}  # fmt: skip
ACCOUNTS = [  # name, role, node
    ("chen", "admin", "sh"),  # the city
    ("alice", "dispatcher", "xuhui"),
    ("bob", "dispatcher", "xuhui"),
    ("vera", "viewer", "sh"),
    ("tom", "dispatcher", "xuhui-tianping"),  # a street officer
]

# a deadline a dispatcher may give: in the future, and within the year a dispatch allows
SOON = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()


def add_accounts(store) -> None:
    for name, role, node in ACCOUNTS:
        accounts.add(store, name, role, node, PASSWORD, "test", now())


def build_console_db(db_url: str, sites: int = 8) -> None:
    """alarms: high on sites 0..2, low on 3, one closed on 4; a hazard for each incident."""
    store = build_city(db_url, sites=sites, alarms=3, low=1, closed=1)
    try:
        make_registry(store, UNITS)
        add_accounts(store)
        hazards.sync(store, now())
    finally:
        store.close()


def hazard_of(db_url: str, site: str) -> dict:
    store = open_store(db_url)
    try:
        return store.rows("SELECT * FROM hazards WHERE site = ? ORDER BY id", (site,))[0]
    finally:
        store.close()


def csrf_in(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def log_in(client, name: str, password: str = PASSWORD):
    token = csrf_in(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf": token},
                       follow_redirects=False)  # fmt: skip
