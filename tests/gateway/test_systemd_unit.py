"""The example systemd unit restarts the gateway on every failure exit code and not on a
configuration error (gateway/exits.py)."""

from __future__ import annotations

import configparser
from pathlib import Path

from gasguard.gateway import exits

UNIT = Path(__file__).resolve().parents[2] / "examples" / "systemd" / "gasguard-gateway.service"


def test_the_example_unit_restarts_on_failure_but_not_on_a_bad_config():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"].split() == [str(exits.EX_CONFIG)]
    assert "gasguard gateway --config" in svc["ExecStart"]
    codes = [exits.EX_SOFTWARE, exits.EX_OSERR, exits.EX_CANTCREAT, exits.EX_IOERR]
    assert all(c != 0 and c != exits.EX_CONFIG for c in codes)
    text = UNIT.read_text()
    for c in codes:
        assert " %d " % c in text.replace(",", " ")  # each code is explained in the unit
