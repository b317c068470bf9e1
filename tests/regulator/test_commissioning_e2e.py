"""Issue 26 end to end, both halves joined: `gasguard commission` with the bump test on a virtual
board (the detector simulator supplies the gas), the signed record, `gasguard gateway record
add` on the site box, the gateway process, mosquitto, the regulator's ingest, the ledger
(SQLite and PostgreSQL) and the unit's page, which shows the unit commissioned with the
valve-close time the board measured. The same record altered after signing is refused and
shown as such; the good one still counts."""

from __future__ import annotations

import base64
import copy
import datetime
import json

from starlette.testclient import TestClient

from gasguard.regulator import installers
from gasguard.regulator.store import now, open_store
from gasguard.regulator.web import accounts
from gasguard.regulator.web.app import create_console
from gasguard.tools.device import read_device_config
from gasguard.tools.sim.brokers import free_port
from gasguard.tools.sim.gwrun import GatewayProcess, write_config
from gasguard.tools.sim.vboard_service import VboardService
from tests.tools.test_commission import EXAMPLE, IDENT, commission, only

from .city_registry import NODES
from .conftest import wait_rows
from .test_records_e2e import add
from .web_fixture import PASSWORD, log_in


def _later(iso: str) -> str:
    t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (t + datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_commissioned_board_shows_on_its_unit_with_the_measured_close_time(
    broker, db_url, ingests, tmp_path
):
    cfg, key = read_device_config(EXAMPLE)
    site, device = cfg["site"], cfg["device_id"]
    who = json.loads(IDENT.read_text())
    store = open_store(db_url, create=True)
    try:
        with store.transaction():
            for n in NODES:
                store.x("INSERT INTO nodes (id, parent, level, name) VALUES (?, ?, ?, ?)", n)
            store.x("INSERT INTO units (site, name, address, gas, responsible, phone, node) "
                    "VALUES (?, '火锅88', '天平路 88 号', 'ng', '赵六', '021-0000', "
                    "'xuhui-tianping')", (site,))  # fmt: skip
            store.x("INSERT INTO unit_devices (site, device) VALUES (?, ?)", (site, device))
        installers.add(store, now(), "admin", who["name"], who["company"], who["certificate"],
                       base64.b64decode(who["public_key"]))  # fmt: skip
        accounts.add(store, "chen", "admin", "sh", PASSWORD, "test", now())
    finally:
        store.close()

    # the installer's part: the bump test on the board, the signed record
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING " + device, 20)
        r = commission(svc, tmp_path / "rec", config=EXAMPLE, bump=True)
        assert r.returncode == 0, r.stdout + r.stderr
    path = only(tmp_path / "rec", "commissioning-%s-*.json" % device)
    record = json.loads(path.read_text())
    close_ms = max(t["high_to_closed_ms"] for t in record["bump_tests"])
    assert all(t["result"] == "pass" for t in record["bump_tests"]) and close_ms > 0

    # the site box carries it; the regulator verifies it
    ingests(broker.url, db_url).start()
    gw_cfg = write_config(tmp_path / "gw", {device: key}, broker.url, site=site,
                          tcp_port=free_port())  # fmt: skip
    gw = GatewayProcess(gw_cfg).start()
    try:
        got = add(gw_cfg, path)
        assert got.returncode == 0, got.stderr
        wait_rows(db_url, "SELECT status FROM commissioning_records",
                  lambda rs: [r["status"] for r in rs] == ["accepted"], timeout=60)  # fmt: skip
        # altered after signing: a faster valve, and later, so the gateway carries it on
        forged = copy.deepcopy(record)
        forged["bump_tests"][0]["high_to_closed_ms"] = 150
        forged["finished_at"] = _later(record["finished_at"])
        forged_path = tmp_path / "forged.json"
        forged_path.write_text(json.dumps(forged, ensure_ascii=False))
        got = add(gw_cfg, forged_path)
        assert got.returncode == 0, got.stderr  # the gateway cannot know keys: the regulator can
        rows = wait_rows(db_url, "SELECT status, reason FROM commissioning_records",
                         lambda rs: len(rs) == 2, timeout=60)  # fmt: skip
    finally:
        gw.stop()
    refused = [r for r in rows if r["status"] != "accepted"]
    assert len(refused) == 1 and "altered after signing" in refused[0]["reason"]
    with TestClient(create_console(db_url)) as console:
        assert log_in(console, "chen").status_code == 303
        page = console.get("/units/%s" % site).text
    start = page.index('id="commissioning"')
    table = page[start:page.index("</table>", start)]
    assert table.count("已调试") == 1 and "%d 毫秒" % close_ms in table, table
    assert "150 毫秒" not in table.split("已拒收")[0]
    assert table.count("已拒收") == 1 and "签名后被篡改" in table
    assert who["name"] in table
