"""examples/hotpot-88 is what the demo, the docs and the tests use: it must stay a site that passes
the install rules, whose gateway config loads and whose keys agree on both sides."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from gasguard.gateway import config as gwconfig
from gasguard.tools.installer.configcheck import check

SITE = Path(__file__).resolve().parents[2] / "examples" / "hotpot-88"
DEVICES = sorted(SITE.glob("kitchen-*.json"))


def test_device_configs_are_fit_to_install():
    assert len(DEVICES) == 2
    for p in DEVICES:
        found = check(json.loads(p.read_text()), datetime.date(2026, 11, 23))
        assert found == [], "%s: %s" % (p.name, [str(f) for f in found])


def test_gateway_config_loads_and_knows_every_device(tmp_path):
    text = (SITE / "gateway.toml").read_text()
    # the site box's secrets live under /etc: stand them in here
    for name in ("mqtt-password", "regulator-ca.pem"):
        (tmp_path / name).write_text("x\n")
        text = text.replace("/etc/gasguard/" + name, str(tmp_path / name))
    text = text.replace('"/var/lib/gasguard"', '"%s"' % (tmp_path / "var"))
    (tmp_path / "gateway.toml").write_text(text)
    (tmp_path / "keys.toml").write_text((SITE / "keys.toml").read_text())
    (tmp_path / "keys.toml").chmod(0o600)
    cfg = gwconfig.load(tmp_path / "gateway.toml")
    devices = {json.loads(p.read_text())["device_id"]: p for p in DEVICES}
    assert set(cfg.keys) == set(devices)
    for dev, p in devices.items():
        assert cfg.keys[dev].hex() == json.loads(p.read_text())["key_hex"]
    assert cfg.mqtt.tls and cfg.mqtt.url.startswith("mqtts://")
