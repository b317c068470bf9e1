"""The commissioning record (issue 26): built from what the board and the installer said, judged,
signed, and written as JSON, bilingual HTML and PDF under a name of its own.

The fields are those of docs/design.md §2.6 (the regulator's side relies on them; the schema is
protocol/schemas/commissioning-record.schema.json). Everything in it is an integer, a string, a
boolean or null: the signed bytes (protocol/record.py) refuse floats, so the config's metres
are kept as the text the installer wrote ("3.05") and readings as tenths of %LEL.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from pathlib import Path
from typing import Any

from gasguard.protocol import record as signed
from gasguard.tools import human

PASS, FAIL, INCOMPLETE = "PASS", "FAIL", "INCOMPLETE"
NOT_CONFIRMED = "not confirmed"
RESULTS = ("pass", "fail", NOT_CONFIRMED, "skipped")
NO_INSTALL = "no install record: placement not checked"
# what the record must name for an inspector to accept it (install block fields)
UNIT_FIELDS = ("name", "address", "responsible")
DETECTOR_FIELDS = ("model", "serial", "approval", "range", "calibrated", "end_of_life")
VALVE_FIELDS = ("model", "serial", "standard")
BOARD_FIELDS = ("id", "firmware", "digest", "config_digest", "micropython", "platform")
TEMPLATE = "commissioning-record.html"


def utc(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def plain(v: Any) -> Any:
    """The config's values as the signed bytes can hold them: a float as the text it reads as."""
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def tenths(pct: Any) -> int | None:
    if isinstance(pct, bool) or not isinstance(pct, int | float) or pct != pct:
        return None
    return int(round(pct * 10))


def setpoints(cfg: dict[str, Any]) -> dict[str, Any]:
    a = cfg.get("alarm") if isinstance(cfg.get("alarm"), dict) else {}
    return {
        "low_tenths": tenths(a.get("low_alarm_pct", 20)),
        "high_tenths": tenths(a.get("high_alarm_pct", 50)),
        "hysteresis_tenths": tenths(a.get("hysteresis_pct", 2)),
        "confirm_low": a.get("confirm_low", 1),
        "close_on_low": bool(a.get("close_on_low", False)),
    }


def equipment(cfg: dict[str, Any], board: dict[str, Any]) -> dict[str, Any]:
    inst = cfg.get("install") if isinstance(cfg.get("install"), dict) else {}
    placed = {d.get("address"): d for d in inst.get("detectors") or [] if isinstance(d, dict)}
    dets = []
    for d in cfg.get("detectors") or []:
        if not isinstance(d, dict):
            continue
        p = placed.get(d.get("address"), {})
        dets.append(present({"address": d.get("address"), "gas": d.get("gas"),
                             "profile": d.get("profile"),
                             **{k: p.get(k) for k in DETECTOR_FIELDS}}))  # fmt: skip
    v = inst.get("valve") if isinstance(inst.get("valve"), dict) else {}
    kind = cfg.get("valve", {}).get("kind") if isinstance(cfg.get("valve"), dict) else None
    board = {k: board.get(k) for k in BOARD_FIELDS}
    return {"board": board, "detectors": dets,
            "valve": {**{k: v.get(k) for k in VALVE_FIELDS}, "kind": kind}}  # fmt: skip


def placed(rec: dict[str, Any]) -> bool:
    """The record carries the config's install block (more than the rules' findings)."""
    return isinstance(rec.get("install"), dict) and set(rec["install"]) > {"findings"}


def present(d: dict[str, Any]) -> dict[str, Any]:
    """What is known: a field nobody gave is left out, never null (the delivery's schema takes
    an absent field, not a null one)."""
    return {k: v for k, v in d.items() if v is not None}


def named(rec: dict[str, Any], address: Any) -> str:
    """"detector 1 (Modbus address 1)": by its place in the config, as everywhere else."""
    for j, d in enumerate(rec["equipment"]["detectors"]):
        if d.get("address") == address:
            return human.detector(j, address)
    return human.detector(None, address)


def gaps(rec: dict[str, Any], today: datetime.date) -> list[str]:
    """What keeps the record from being acceptance grade although nothing failed."""
    out = []
    if not placed(rec):
        out.append(NO_INSTALL)
    missing = ["unit " + k for k in UNIT_FIELDS if not (rec.get("unit") or {}).get(k)]
    eq = rec["equipment"]
    for d in eq["detectors"]:
        missing += ["%s %s" % (named(rec, d.get("address")), k) for k in DETECTOR_FIELDS
                    if not d.get(k)]  # fmt: skip
    missing += ["valve " + k for k in VALVE_FIELDS if not eq["valve"].get(k)]
    if missing:
        out.append("not in the config's install block: " + ", ".join(missing))
    if not rec.get("event_log_head"):
        out.append("the board's event log head could not be read: the record is not tied to "
                   "its history")  # fmt: skip
    return out


def failures(rec: dict[str, Any], today: datetime.date) -> list[str]:
    out = ["%s: %s" % (c["name"], c.get("detail") or "failed") for c in rec["checks"]
           if c["result"] == "fail"]  # fmt: skip
    out += ["bump test of %s: %s" % (named(rec, b["detector"]), b.get("detail") or "failed")
            for b in rec["bump_tests"] if b["result"] == "fail"]  # fmt: skip
    for d in rec["equipment"]["detectors"]:
        end = d.get("end_of_life")
        try:
            if end and datetime.date.fromisoformat(end) <= today:
                out.append("%s is past the end of its service life (%s)"
                           % (named(rec, d.get("address")), end))  # fmt: skip
        except (TypeError, ValueError):
            out.append("%s: end_of_life %r is not a date" % (named(rec, d.get("address")), end))
    errors = [f for f in rec["install"].get("findings", []) if f.get("level") == "error"]
    if errors and not rec.get("install_rules_overridden"):
        out += ["install rule: %s: %s" % (f.get("field"), f.get("message")) for f in errors]
    return out


def judge(rec: dict[str, Any], today: datetime.date) -> tuple[str, list[str]]:
    """(verdict, why): FAIL on any failure; INCOMPLETE when something was not confirmed by a
    person, not done, or the record lacks what an inspector needs; PASS otherwise."""
    failed = failures(rec, today)
    if failed:
        return FAIL, failed + gaps(rec, today)
    why = ["%s: %s" % (c["name"], c["result"]) for c in rec["checks"]
           if c["result"] in (NOT_CONFIRMED, "skipped")]  # fmt: skip
    why += ["bump test of %s: %s" % (named(rec, b["detector"]), b["result"])
            for b in rec["bump_tests"] if b["result"] != "pass"]  # fmt: skip
    if not rec["bump_tests"]:
        why.append("no bump test: gas never proved to close the valve")
    why += gaps(rec, today)
    return (INCOMPLETE, why) if why else (PASS, [])


def build(
    *,
    cfg: dict[str, Any],
    installer: dict[str, Any],
    board: dict[str, Any],
    checks: list[dict[str, Any]],
    bumps: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    override: dict[str, Any] | None,
    log_head: tuple[int, str] | None,
    started: datetime.datetime,
    finished: datetime.datetime,
) -> dict[str, Any]:
    inst = cfg.get("install")
    install: dict[str, Any] = {}
    if isinstance(inst, dict):  # flat, as the regulator's compliance reads it (ceiling_m, ...)
        install = plain({k: v for k, v in inst.items() if k not in ("unit", "valve")})
    install["findings"] = plain(findings)
    unit = inst.get("unit") if isinstance(inst, dict) else None
    unit = unit if isinstance(unit, dict) else {}
    rec: dict[str, Any] = {
        "schema": signed.SCHEMA,
        "record_id": str(uuid.uuid4()),
        "site": cfg.get("site"),
        "device": cfg.get("device_id"),
        "unit": {k: unit.get(k) for k in UNIT_FIELDS},
        "installer": {k: installer.get(k) for k in ("name", "company", "certificate", "key_id")},
        "equipment": plain(equipment(cfg, board)),
        "install": install,
        "setpoints": setpoints(cfg),
        "checks": checks,
        "bump_tests": bumps,
        "install_rules_overridden": plain(override),
        "event_log_head": log_head[1] if log_head else None,
        "event_log_index": log_head[0] if log_head else None,
        "started_at": utc(started),
        "finished_at": utc(finished),
    }
    rec["verdict"], rec["verdict_reasons"] = judge(rec, finished.date())
    return rec


# --- the documents -------------------------------------------------------------------------------


def html(rec: dict[str, Any]) -> str:
    """The record as a bilingual (zh-CN and English) page to read and print; every value is
    escaped (autoescape), whatever the config, the installer or the board said."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True)  # fmt: skip
    known = lambda v: None if isinstance(v, jinja2.Undefined) else v  # noqa: E731 - absent
    env.filters["local"] = lambda s: human.local_time(s) if known(s) else "—"
    env.filters["shown"] = lambda v: human.figure(known(v))
    env.filters["detector"] = lambda a: named(rec, a)
    env.filters["lel"] = lambda t: "—" if known(t) is None else "%.1f %%LEL" % (t / 10)
    return env.get_template(TEMPLATE).render(r=rec, digest=signed.digest(rec),
                                             placed=placed(rec))  # fmt: skip


def stem(rec: dict[str, Any], when: datetime.datetime) -> str:
    """commissioning-<device>-<local date-time>-<record id's first 8>: a name no other record
    has (two runs in the same second differ by their record ids)."""
    device = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(rec["device"]))[:64]
    return "commissioning-%s-%s-%s" % (device, when.strftime("%Y%m%d-%H%M%S"),
                                       rec["record_id"][:8])  # fmt: skip


def write(out_dir: Path, rec: dict[str, Any], when: datetime.datetime,
          pdf: bool = True) -> tuple[dict[str, Path], str | None]:  # fmt: skip
    """The signed record as <stem>.json, .html and .pdf, each created exclusively (never over
    another file). Returns the paths and, if the PDF could not be printed, why (the JSON and
    HTML are written all the same)."""
    from gasguard.tools import pdf as printer

    out_dir.mkdir(parents=True, exist_ok=True)
    name = stem(rec, when)
    paths = {ext: out_dir / ("%s.%s" % (name, ext)) for ext in ("json", "html", "pdf")}
    page = html(rec)
    for ext, text in (("json", json.dumps(rec, indent=2, ensure_ascii=False) + "\n"),
                      ("html", page)):  # fmt: skip
        with open(paths[ext], "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    if not pdf:
        del paths["pdf"]
        return paths, None
    if paths["pdf"].exists():
        raise FileExistsError(paths["pdf"])
    try:
        printer.html_to_pdf(page, paths["pdf"])
    except printer.PdfError as e:
        del paths["pdf"]
        return paths, str(e)
    return paths, None
