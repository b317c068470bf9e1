"""Issue 26's delivery end to end: a record file added on the site box with `gasguard gateway
record add`, the gateway process, mosquitto, the regulator's ingest process, the ledger (SQLite
and PostgreSQL) and the unit's page. The record signed in the test stands for `gasguard
commission`'s (the lead joins the two halves)."""

from __future__ import annotations

import json
import subprocess
import sys

from starlette.testclient import TestClient

from gasguard.protocol import cloudevents
from gasguard.regulator import installers
from gasguard.regulator.store import now, open_store
from gasguard.regulator.web import accounts
from gasguard.regulator.web.app import create_console
from gasguard.tools.sim.brokers import free_port
from gasguard.tools.sim.gwrun import GatewayProcess, write_config
from tests.commissioning import Installer, signed, unsigned

from .city_registry import NODES
from .conftest import wait_rows
from .web_fixture import PASSWORD, log_in

SITE = "site-9"
KEYS = {"kitchen-%d" % i: bytes([0x40 + i]) * 16 for i in range(1, 4)}


def add(config, path):
    return subprocess.run(
        [sys.executable, "-m", "gasguard.gateway", "record", "add", str(path), "--config",
         str(config)], capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_signed_record_reaches_the_unit_page_as_commissioned_and_forgeries_as_refused(
    broker, db_url, ingests, publisher, tmp_path
):
    who, stranger = Installer(), Installer(name="李四")
    store = open_store(db_url, create=True)
    try:
        with store.transaction():
            for n in NODES:
                store.x("INSERT INTO nodes (id, parent, level, name) VALUES (?, ?, ?, ?)", n)
            store.x("INSERT INTO units (site, name, address, gas, responsible, phone, node) "
                    "VALUES (?, '老王火锅', '文三路 1 号', 'ng', '王五', '021-0000', 'xuhui')",
                    (SITE,))  # fmt: skip
            for dev in KEYS:
                store.x("INSERT INTO unit_devices (site, device) VALUES (?, ?)", (SITE, dev))
        installers.add(store, now(), "admin", who.name, who.company, who.certificate,
                       who.public_raw)  # fmt: skip
        accounts.add(store, "chen", "admin", "sh", PASSWORD, "test", now())
    finally:
        store.close()
    ingests(broker.url, db_url).start()
    cfg = write_config(tmp_path / "gw", KEYS, broker.url, site=SITE, tcp_port=free_port())
    gw = GatewayProcess(cfg).start()
    try:
        good = signed(SITE, "kitchen-1", who, close_ms=1840)
        tampered = signed(SITE, "kitchen-2", who)
        tampered["verdict"] = "PASS"
        tampered["bump_tests"] = [dict(tampered["bump_tests"][0], result="pass",
                                       high_to_closed_ms=900)]  # fmt: skip
        by_stranger = stranger.sign(unsigned(SITE, "kitchen-3", stranger))
        files = {"good": good, "tampered": tampered, "stranger": by_stranger}
        for name, record in files.items():
            p = tmp_path / ("commissioning-%s.json" % name)
            p.write_text(json.dumps(record, ensure_ascii=False, indent=2))
            r = add(cfg, p)
            assert r.returncode == 0, (name, r.stderr)
        # the gateway refuses an unsigned record at its border ...
        p = tmp_path / "unsigned.json"
        p.write_text(json.dumps(unsigned(SITE, "kitchen-3", who)))
        r = add(cfg, p)
        assert r.returncode == 2 and "unsigned" in r.stderr
        # ... so a rogue publisher sends it, and replays the good record on another device's topic
        for dev, record in (("kitchen-2", unsigned(SITE, "kitchen-2", who)), ("kitchen-3", good)):
            ce = cloudevents.commissioning(SITE, dev, "gw-rogue", record, "0" * 64, 1764500000)
            publisher.send(cloudevents.topic_commissioning(SITE, dev), json.dumps(ce), True)
        rows = wait_rows(db_url, "SELECT * FROM commissioning_records ORDER BY device, status",
                         lambda rs: len(rs) == 5, timeout=60)  # fmt: skip
    finally:
        gw.stop()
    verdicts = {(r["device"], r["status"], (r["reason"] or "")[:40]) for r in rows}
    assert ("kitchen-1", "accepted", "") in verdicts
    reasons = " | ".join(r["reason"] or "" for r in rows)
    assert "altered after signing" in reasons
    assert "which no registered installer holds" in reasons
    assert "unsigned" in reasons
    assert "but came on the topic of site site-9, device kitchen-3" in reasons
    with TestClient(create_console(db_url)) as console:
        assert log_in(console, "chen").status_code == 303
        page = console.get("/units/%s" % SITE).text
    table = page[page.index('id="commissioning"'):page.index("</table>", page.index(
        'id="commissioning"'))]  # fmt: skip
    assert table.count("已调试") == 1 and "1840 毫秒" in table and "张三" in table
    assert table.count("已拒收") == 4
    for kind in ("签名后被篡改", "密钥未登记", "未签名", "不是本设备的记录"):
        assert kind in table, kind
