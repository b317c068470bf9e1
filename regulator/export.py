"""`gasguard regulator export`: the hazard ledger (隐患台账) as CSV or XLSX, for the people who
file it, with Chinese column headers.

Reads only: the database must already be a regulator one (the store's mark) and nothing is
created in it. A cell that a spreadsheet would run as a formula (= + - @, or a tab or carriage
return before one) is written as text: CSV with a leading apostrophe, XLSX as a text cell with
Excel's quote prefix. CSV is UTF-8 with a BOM, which Excel needs to read Chinese. An existing
output file is kept unless --force; the new one is written beside it and renamed into place.
"""

from __future__ import annotations

import csv
import datetime
import os
import sys
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .opening import guarded, ledger

PROG = "gasguard regulator export"
HEADERS = (
    "序号", "隐患编号", "单位", "站点编号", "设备", "隐患类型", "严重程度", "隐患描述", "发现时间",
    "整改责任人", "整改期限", "状态", "是否逾期", "整改情况", "整改时间", "核查人", "核查意见",
    "销号时间",
)  # fmt: skip
KINDS = {
    "alarm": "燃气泄漏报警",
    "no_detector": "未安装可燃气体报警器",
    "below_standard": "报警器不符合标准",
    "wrong_gas": "报警器气种与用气不符",
    "wrong_position": "报警器安装位置不当",
    "not_working": "报警器不能正常工作",
}
SEVERITIES = {"high": "高限报警", "low": "低限报警", "normal": "一般"}
STATUSES = {"open": "待派发", "dispatched": "整改中", "rectified": "待核查", "closed": "已销号"}
RISKY = ("=", "+", "-", "@", "\t", "\r")  # what starts a formula in Excel, LibreOffice, Sheets


def table(store: Any, now: str, overdue: bool = False) -> list[list[str]]:
    """The whole ledger's rows in HEADERS order, times local with their offset."""
    from .hazards import listing

    rows = listing(store, now, overdue=overdue) if "hazards" in store.table_names() else []
    return format_rows(store, rows)


def format_rows(store: Any, rows: list[dict[str, Any]], zone: Any = None) -> list[list[str]]:
    """Hazard rows (hazards.COLS and `overdue`) in HEADERS order, in the order found; times in
    zone (a tzinfo; default this machine's), with their offset. The console passes its scope's
    rows and its --zone."""
    from gasguard.tools.human import local_time

    names: dict[str, str] = {}
    if "units" in store.table_names() and rows:  # the registry's name, where it is registered
        sites, param = store.in_list(sorted({r["site"] for r in rows}))
        names = {r["site"]: r["name"] for r in store.rows(
            "SELECT site, name FROM units WHERE site IN %s" % sites, (param,))}  # fmt: skip
    rows = sorted(rows, key=lambda r: (r["opened_at"], r["id"]))  # a ledger reads as found

    def t(v: str | None) -> str:
        if not v:
            return ""
        if zone is None:
            return local_time(v)
        text = datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(zone)
        text = text.isoformat(sep=" ", timespec="seconds")
        return text[:19] + " " + text[19:]  # as local_time spells it: 2026-11-30 21:05:12 +08:00

    return [
        [str(n), str(r["id"]), names.get(r["site"]) or r["site"], r["site"], r["subject"],
         KINDS.get(r["kind"], r["kind"]), SEVERITIES.get(r["severity"], r["severity"]),
         r["summary"], t(r["opened_at"]), r["responsible"] or "", t(r["deadline"]),
         STATUSES.get(r["status"], r["status"]), "是" if r["overdue"] else "否",
         r["note"] or "", t(r["rectified_at"]), r["verified_by"] or "", r["check_note"] or "",
         t(r["closed_at"])]
        for n, r in enumerate(rows, 1)
    ]  # fmt: skip


def risky(cell: str) -> bool:
    """Starts a formula, or would once a spreadsheet trims its leading spaces and line breaks
    or reads a full-width ＝ as =."""
    head = unicodedata.normalize("NFKC", cell[:64]).lstrip(" \n\u3000\xa0")
    return cell.startswith(RISKY) or head.startswith(RISKY)


def write_csv(path: Path, rows: Iterable[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(HEADERS)
        for row in rows:
            w.writerow(["'" + c if risky(c) else c for c in row])


def write_xlsx(path: Path, rows: Iterable[list[str]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "隐患台账"
    ws.append(HEADERS)
    for row in rows:
        append_safe(ws, row)
    ws.freeze_panes = "A2"
    wb.save(path)


def append_safe(ws: Any, row: list[Any]) -> None:
    """Append a row to an openpyxl sheet, every text a spreadsheet would run as a formula kept
    as text (the weekly reports' sheets too)."""
    ws.append(row)
    for col, value in enumerate(row, 1):
        if isinstance(value, str) and risky(value):
            cell = ws.cell(row=ws.max_row, column=col)
            cell.data_type = "s"  # openpyxl took "=..." for a formula: it is text
            cell.quotePrefix = True  # and Excel keeps it text when someone edits it


def export(url: str, out: Path, *, overdue: bool = False, force: bool = False) -> int:
    """Write the ledger to out (.csv or .xlsx); returns the number of hazards."""
    from .store import now

    suffix = out.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise ValueError("--out %s: a .csv or .xlsx file" % out)
    if out.exists() and not force:
        raise ValueError("--out %s: exists; --force replaces it" % out)
    if not out.parent.is_dir():
        raise ValueError("--out %s: no such directory %s" % (out, out.parent))
    with ledger(url) as store:
        rows = table(store, now(), overdue)
    try:  # a read-only directory, /proc, a full disk: one line and exit 1, no traceback
        _write(out, suffix, rows)
    except OSError as e:
        raise ExportFailed("--out %s: %s" % (out, e.strerror or e)) from None
    return len(rows)


class ExportFailed(RuntimeError):
    """The file could not be written (exit 1); nothing half-written is left behind."""


def _write(out: Path, suffix: str, rows: list[Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".%s." % out.name, dir=out.parent)
    os.close(fd)
    try:
        (write_csv if suffix == ".csv" else write_xlsx)(Path(tmp), rows)
        mask = os.umask(0o022)  # mkstemp made it 0600: give it what open() would have
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def register_export(sub: Any) -> Any:
    """Add `export` to the `regulator` command's subparsers."""
    from gasguard.tools.exitcodes import epilog

    p = sub.add_parser(
        "export",
        help="write the hazard ledger (隐患台账) as CSV or XLSX",
        epilog=epilog(
            "here:\n  1  also: --out could not be written (nothing half-written is left)\n"
            "  2  also: not a regulator database, or --out exists (use --force)\n"
            "times are written in this machine's local time, with the offset from UTC"
        ),
    )
    p.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    p.add_argument("--out", required=True, help="FILE.csv (UTF-8 with BOM) or FILE.xlsx")
    p.add_argument("--overdue", action="store_true", help="only hazards past their deadline")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(run=main_export)
    return p


def main_export(args: Any) -> int:
    def body() -> int:
        try:
            n = export(args.db, Path(args.out), overdue=args.overdue, force=args.force)
        except ExportFailed as e:
            print("%s: %s" % (PROG, e), file=sys.stderr)
            return 1
        print("%d hazards written to %s" % (n, args.out))
        return 0

    return guarded(PROG, body)
