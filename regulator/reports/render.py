"""A district's week as files: bilingual HTML (Chinese first, then English; Jinja2, autoescaped)
printed to PDF through tools/pdf.py, and an XLSX workbook with the same figures and the rows
behind them.

Files are named per district and ISO week (燃气周报_上海市_徐汇区_2026-W48.pdf); a name with
anything but letters, digits, - and _ is spelled with _ instead and gets 8 hex of its node id's
SHA-256, so hostile or look-alike names can neither leave the directory nor take another
district's file. Both files are made in a temporary directory beside them and then put in
place: linked (never over an existing file) or, when asked to replace, renamed over it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .figures import Figure, Report
from .week import ZONE

NONE = "—"  # a figure without data: never 0
PREFIX = "燃气周报"
LEVELS = {"low": ("低限", "low"), "high": ("高限", "high")}
Printer = Callable[[str, Path], Any]  # tools/pdf.html_to_pdf's shape


class ReportExists(ValueError):
    """A report file for this district and week is there already (exit 2; --replace)."""


# --- names -------------------------------------------------------------------------------------


def _part(text: str) -> str:
    kept = "".join(c if c.isalnum() or c in "-_" else "_"
                   for c in unicodedata.normalize("NFKC", text))  # fmt: skip
    return kept.strip("_")[:40] or "_"


def file_stem(district_id: str, name: str, week: str) -> str:
    city = district_id.split("/", 1)[0]
    clean = _part(city) == city and _part(name) == name
    stem = "%s_%s_%s_%s" % (PREFIX, _part(city), _part(name), week)
    if not clean:
        stem += "_" + hashlib.sha256(district_id.encode()).hexdigest()[:8]
    return stem


# --- how figures read --------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    s = round(seconds)
    if s < 3600:
        return "%d min %02d s" % divmod(s, 60) if s >= 60 else "%d s" % s
    h, m = divmod(s // 60, 60)
    return "%d h %02d min" % (h, m)


def ratio(f: Figure) -> str:
    if f.value is None:
        return NONE
    if f.key == "offline_rate":  # seconds: shown in hours
        return "%.1f %% (%.1f h / %.1f h)" % (100 * f.value, f.num / 3600, f.den / 3600)
    return "%.1f %% (%d/%d)" % (100 * f.value, f.num, f.den)


def summary(rep: Report) -> list[dict[str, Any]]:
    """The report's figure lines, as both files show them: label, text, a number for the sheet
    (a ratio as a fraction, a time in minutes; None without data), and the definition."""
    out = []
    for key, f in rep.figures.items():
        zh, en, def_zh, def_en = f.names
        base = {"def_zh": def_zh, "def_en": def_en, "key": key, "num": f.num, "den": f.den,
                "n": None}  # fmt: skip
        if key == "offline_rate" and f.den:  # device-seconds, read as device-hours
            base["num"], base["den"] = round(f.num / 3600, 2), round(f.den / 3600, 2)
        if f.kind == "count":
            lv = rep.levels
            text = "%d（高限 %d，低限 %d / high %d, low %d）" % (
                f.value, lv["high"], lv["low"], lv["high"], lv["low"])
            out.append({**base, "zh": zh, "en": en, "text": text, "number": f.value})
        elif f.kind == "ratio":
            out.append({**base, "zh": zh, "en": en, "text": ratio(f), "number": f.value})
        else:
            missing = "未%s %d / not %s %d" % (
                "确认" if key == "response" else "销号", f.missing,
                "acknowledged" if key == "response" else "closed", f.missing)
            for part, value in (("中位数", f.value), ("P90", f.p90)):
                label_en = en + (", median" if part == "中位数" else ", 90th percentile")
                text = duration(value) + "（n = %d；%s）" % (f.n, missing)
                out.append({**base, "zh": zh + " " + part, "en": label_en, "text": text,
                            "number": None if value is None else round(value / 60, 2),
                            "n": f.n})  # fmt: skip
    return out


def _local(t: datetime.datetime | None) -> str:
    """Asia/Shanghai, with its offset, as every gasguard time is shown."""
    if t is None:
        return NONE
    t = t.astimezone(ZONE)
    return t.strftime("%Y-%m-%d %H:%M ") + t.isoformat()[-6:]


# --- HTML and PDF ------------------------------------------------------------------------------


def html(rep: Report) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    return env.get_template("report.html").render(
        rep=rep, lines=summary(rep), period=period(rep), as_of=_local(rep.as_of), nodata=NONE,
        definitions=[f.names for f in rep.figures.values()],
    )  # fmt: skip


def period(rep: Report) -> str:
    return "%s 00:00 — %s 00:00 (Asia/Shanghai, UTC+8)" % (
        rep.week.start.date().isoformat(), rep.week.end.date().isoformat())


# --- XLSX --------------------------------------------------------------------------------------


def _cell(v: Any) -> Any:
    return NONE if v is None else v


def write_xlsx(rep: Report, path: Path) -> None:
    from openpyxl import Workbook

    from ..export import append_safe

    wb = Workbook()
    ws = wb.active
    ws.title = "概要 Summary"
    for row in (
        ["燃气报警周报 Weekly gas alarm report"],
        ["区 District", rep.district.name, rep.district.id],
        ["周 Week", rep.week.name, period(rep)],
        ["统计截至 As of", _local(rep.as_of)],
        [],
        ["指标", "Figure", "数值 Value", "数 Number (比例 ratio; 时间 min)", "分子 Numerator",
         "分母 Denominator", "样本 n", "定义", "Definition"],
    ):  # fmt: skip
        append_safe(ws, row)
    for line in summary(rep):
        append_safe(ws, [line["zh"], line["en"], line["text"], _cell(line["number"]),
                         _cell(line["num"]), _cell(line["den"]), _cell(line["n"]),
                         line["def_zh"], line["def_en"]])  # fmt: skip
        if rep.figures[line["key"]].kind == "ratio" and line["number"] is not None:
            ws.cell(row=ws.max_row, column=4).number_format = "0.0%"
    st = wb.create_sheet("街道 Streets")
    append_safe(st, ["街道 Street", "在册单位 Units", "低限报警 Low", "高限报警 High",
                     "报警合计 Alarms"])  # fmt: skip
    for s in rep.streets:
        append_safe(st, [s["street"], s["units"], s["low"], s["high"], s["total"]])
    al = wb.create_sheet("报警 Alarms")
    append_safe(al, ["站点编号 Site", "单位 Unit", "街道 Street", "设备 Device", "级别 Level",
                     "报警时间 Opened", "首次确认 Acknowledged", "响应(分钟) Response (min)",
                     "隐患销号 Hazard closed", "处置(小时) Handling (h)"])  # fmt: skip
    for a in rep.alarms:
        append_safe(al, [
            a["site"], a["name"], a["street"], a["device"], " ".join(LEVELS[a["level"]]),
            _local(a["opened_at"]), _local(a["acknowledged_at"]),
            _cell(None if a["response_s"] is None else round(a["response_s"] / 60, 2)),
            _local(a["closed_at"]),
            _cell(None if a["handling_s"] is None else round(a["handling_s"] / 3600, 2)),
        ])  # fmt: skip
    un = wb.create_sheet("单位 Units")
    append_safe(un, ["站点编号 Site", "单位 Unit", "街道 Street", "在册设备 Devices",
                     "收到数据 Heard", "周末在线 Online at end", "监测(小时) Watched (h)",
                     "离线(小时) Offline (h)", "报警 Alarms"])  # fmt: skip
    for u in rep.units:
        append_safe(un, [u["site"], u["name"], u["street"], u["devices"], u["heard"],
                         u["online_at_end"], round(u["watched_s"] / 3600, 2),
                         round(u["offline_s"] / 3600, 2), u["alarms"]])  # fmt: skip
    for sheet in wb.worksheets[1:]:
        sheet.freeze_panes = "A2"
    wb.save(path)


# --- both files, in place ----------------------------------------------------------------------


def targets(rep: Report, out_dir: Path) -> list[Path]:
    stem = file_stem(rep.district.id, rep.district.name, rep.week.name)
    return [out_dir / (stem + ".pdf"), out_dir / (stem + ".xlsx")]


def write(rep: Report, out_dir: Path, *, replace: bool = False,
          printer: Printer | None = None) -> list[Path]:  # fmt: skip
    """The PDF and XLSX in out_dir: ReportExists if either is there and not replace; nothing
    half-written is ever left under their names."""
    if not out_dir.is_dir():
        raise ValueError("--out %s: no such directory" % out_dir)
    paths = targets(rep, out_dir)
    there = [p.name for p in paths if p.exists()]
    if there and not replace:
        raise ReportExists("--out: %s exists already (--replace writes it again)"
                           % ", ".join(there))  # fmt: skip
    if printer is None:
        from gasguard.tools.pdf import html_to_pdf as printer
    mask = os.umask(0o022)
    os.umask(mask)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out_dir) as tmp:
        made = [Path(tmp) / "report.pdf", Path(tmp) / "report.xlsx"]
        printer(html(rep), made[0])
        write_xlsx(rep, made[1])
        placed: list[Path] = []
        try:
            for src, dst in zip(made, paths, strict=True):
                os.chmod(src, 0o666 & ~mask)  # mkstemp-like 0600 otherwise
                if replace:
                    os.replace(src, dst)
                else:
                    os.link(src, dst)  # fails, rather than overwrite, if one appeared meanwhile
                placed.append(dst)
        except FileExistsError as e:
            for p in placed:
                p.unlink()
            raise ReportExists("--out: %s exists already (--replace writes it again)"
                               % Path(e.filename2 or e.filename or "").name) from None
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
