"""Commissioning records for the delivery tests (issue 26), made and signed the way
`gasguard commission` does through protocol/record.py, with the top-level fields of
docs/design.md §2.6."""

from __future__ import annotations

import uuid
from typing import Any

from gasguard.protocol import record as rec


class Installer:
    """An installer's Ed25519 key, as `gasguard installer keygen` makes it."""

    def __init__(self, name: str = "张三", company: str = "安装公司",
                 certificate: str = "ZJ-2026-001"):  # fmt: skip
        pem, self.public_raw = rec.new_key()
        self.pem = pem
        self.key = rec.load_private(pem)
        self.key_id = rec.key_id(self.public_raw)
        self.name, self.company, self.certificate = name, company, certificate

    def sign(self, record: dict[str, Any]) -> dict[str, Any]:
        return rec.sign(record, self.key)


def unsigned(site: str, device: str, installer: Installer, *,
             finished: str = "2026-11-30T10:20:00Z",
             verdict: str = "PASS", close_ms: int = 1840, gas: str = "methane",
             bump_result: str = "pass", **extra: Any) -> dict[str, Any]:  # fmt: skip
    r: dict[str, Any] = {
        "schema": rec.SCHEMA,
        "record_id": str(uuid.uuid4()),
        "site": site,
        "device": device,
        "unit": {"name": "老王火锅", "address": "杭州市西湖区文三路 1 号", "responsible": "王五"},
        "installer": {"name": installer.name, "company": installer.company,
                      "certificate": installer.certificate, "key_id": installer.key_id},
        "equipment": {
            "board": {"id": "esp32-aa", "firmware": "0.1.0", "digest": "ab" * 16},
            "detectors": [{"address": 1, "model": "GD-100", "serial": "S1",
                           "approval": "GB 15322.1-2019", "gas": gas, "range": "0-100 %LEL",
                           "calibrated": "2026-11-01", "end_of_life": "2031-11-01"}],
            "valve": {"model": "V-1", "serial": "V1", "standard": "GB/T 41317", "kind": "nc"},
        },
        "install": {"ceiling_m": "3.0",
                    "detectors": [{"address": 1, "mount_height_m": "2.7", "distance_m": "2.0",
                                   "above_appliance": False}],
                    "findings": []},
        "setpoints": {"low_tenths": 200, "high_tenths": 400},
        "checks": [{"name": "valve", "result": "pass", "at": "2026-11-30T10:05:00Z",
                    "detail": "closed against its position switch"}],
        "bump_tests": [{"detector": 1, "low_at": "2026-11-30T10:10:00Z",
                        "high_at": "2026-11-30T10:10:05Z",
                        "valve_closed_at": "2026-11-30T10:10:07Z", "high_to_closed_ms": close_ms,
                        "reset_refused_at": "2026-11-30T10:10:20Z",
                        "reset_at": "2026-11-30T10:12:00Z", "peak_tenths": 520,
                        "result": bump_result}],
        "verdict": verdict,
        "event_log_head": "9f" * 32,
        "started_at": "2026-11-30T10:00:00Z",
        "finished_at": finished,
    }
    r.update(extra)
    return r


def signed(site: str, device: str, installer: Installer, **kw: Any) -> dict[str, Any]:
    return installer.sign(unsigned(site, device, installer, **kw))
