"""A message's words: Chinese by default, English per contact; pure, no I/O.

A body (what the outbox stores) is {"title", "text", "markdown", "link", "attachments"}: the
shape the weekly reports enqueue too (regulator/reports/schedule.py, with their files' "sha256"),
so every channel renders any kind. Names come from the registry, which a district fills in: a
unit called "饭店\\n# 已处理" or "[点我](http://evil)" must stay one line of plain words in every
channel, so text is flattened (no control characters) and markdown escaped before it goes in.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse
import zoneinfo
from typing import Any

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")  # what every kitchen and office reads
FIELD_MAX = 120
# C1 too (U+0080-U+009F): the registry refuses only C0, and NEL (U+0085) is a line break to
# Python's e-mail headers, which then refuse the Subject (the alarm's mail failed every try)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e]+")
# markdown's and HTML's active characters as their full-width forms: a robot's markdown subset
# has no reliable escape (WeCom shows a backslash as is), and ＃［］ read naturally in Chinese
_MD = str.maketrans("#*_[]()<>`|~\\&", "＃＊＿［］（）＜＞｀｜～＼＆")

LEVEL = {
    "zh": {"high": "高报警", "low": "低报警", "workorder": "工单逾期"},
    "en": {"high": "HIGH alarm", "low": "low alarm", "workorder": "work order overdue"},
}
VALVE = {"zh": {"closed": "已关闭", "open": "开启", None: "未知"},
         "en": {"closed": "closed", "open": "open", None: "unknown"}}  # fmt: skip
WORDS = {
    "zh": {"unit": "单位", "address": "地址", "reading": "读数", "valve": "切断阀",
           "time": "时间", "step": "第%d级通知", "link": "详情", "ack": "请尽快处置并确认。",
           "wo": "工单", "deadline": "期限", "attachments": "附件"},
    "en": {"unit": "Unit", "address": "Address", "reading": "Reading", "valve": "Valve",
           "time": "Time", "step": "escalation step %d", "link": "Details",
           "ack": "Please act and acknowledge.", "wo": "Work order", "deadline": "Deadline",
           "attachments": "Attachments"},
}  # fmt: skip


def plain(v: Any, limit: int = FIELD_MAX) -> str:
    """One line of text: control characters (newlines, bidi overrides) become one space."""
    s = _CONTROL.sub(" ", "" if v is None else str(v)).strip()
    return s if len(s) <= limit else s[: limit - 1] + "…"


def md(v: Any, limit: int = FIELD_MAX) -> str:
    """plain(), then markdown and HTML made inert (robots render markdown; WeCom also <font>)."""
    return plain(v, limit).translate(_MD)


def local(at: str | datetime.datetime | None) -> str:
    if at is None:
        return "-"
    t = at if isinstance(at, datetime.datetime) else datetime.datetime.fromisoformat(
        at.replace("Z", "+00:00"))  # fmt: skip
    return t.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")


def unit_link(base_url: str, site: str) -> str:
    return "%s/units/%s" % (base_url.rstrip("/"), urllib.parse.quote(site, safe=""))


def alarm(lang: str, base_url: str, unit: dict[str, Any], inc: dict[str, Any], step: int,
          valve: str | None, kind: str = "high") -> dict[str, Any]:  # fmt: skip
    """An incident's message: unit, address, peak %LEL, valve, level, time (Asia/Shanghai)."""
    w, lv = WORDS[lang], LEVEL[lang].get(kind, kind)
    name = unit.get("name") or inc["site"]
    lel = inc.get("peak_lel")
    reading = "-" if lel is None else "%.1f %%LEL" % lel
    valve_word = VALVE[lang].get(valve, VALVE[lang][None])
    link = unit_link(base_url, inc["site"])
    rows = [(w["unit"], name), (w["address"], unit.get("address", "")), (w["reading"], reading),
            (w["valve"], valve_word), (w["time"], local(inc.get("opened_at")))]  # fmt: skip
    head = "【燃气%s】%s" % (lv, plain(name, 60)) if lang == "zh" else "[Gas %s] %s" % (
        lv, plain(name, 60))  # fmt: skip
    if step:
        head += " (%s)" % (w["step"] % (step + 1))
    text = head + "\n" + "\n".join("%s: %s" % (k, plain(v)) for k, v in rows)
    text += "\n%s\n%s: %s" % (w["ack"], w["link"], link)
    mdt = "### %s\n" % md(head, 200) + "\n".join("- %s: %s" % (k, md(v)) for k, v in rows)
    mdt += "\n\n%s\n\n[%s](%s)" % (w["ack"], w["link"], link)
    return {"title": plain(head, 200), "text": text, "markdown": mdt, "link": link,
            "attachments": []}  # fmt: skip


def workorder(lang: str, base_url: str, unit: dict[str, Any], wo: dict[str, Any],
              step: int) -> dict[str, Any]:  # fmt: skip
    w = WORDS[lang]
    name = unit.get("name") or wo.get("site", "")
    link = unit_link(base_url, wo.get("site", ""))
    head = "【%s】%s" % (LEVEL[lang]["workorder"], plain(name, 60))
    if step:
        head += " (%s)" % (w["step"] % (step + 1))
    rows = [(w["wo"], wo.get("id")), (w["unit"], name), (w["address"], unit.get("address", "")),
            (w["deadline"], local(wo.get("deadline")))]  # fmt: skip
    text = head + "\n" + "\n".join("%s: %s" % (k, plain(v)) for k, v in rows)
    text += "\n%s: %s" % (w["link"], link)
    mdt = "### %s\n" % md(head, 200) + "\n".join("- %s: %s" % (k, md(v)) for k, v in rows)
    mdt += "\n\n[%s](%s)" % (w["link"], link)
    return {"title": plain(head, 200), "text": text, "markdown": mdt, "link": link,
            "attachments": []}  # fmt: skip


def markdown_of(body: dict[str, Any]) -> str:
    """A body's markdown; a report's body (title, text, link) made into it, escaped."""
    if body.get("markdown"):
        return body["markdown"]
    lines = str(body.get("text", "")).split("\n")
    out = "### %s\n\n" % md(body.get("title", ""), 200)
    out += "\n\n".join(md(x, 2000) for x in lines)
    if body.get("link"):
        out += "\n\n[%s](%s)" % (md(body.get("title") or "link", 60), body["link"])
    return out


def text_of(body: dict[str, Any]) -> str:
    """A body's plain text and link. A report's files are not named: their paths on the
    regulator's disk mean nothing to a reader (the e-mail attaches them, the link serves them)."""
    text = str(body.get("text") or body.get("title") or "")
    if body.get("link") and body["link"] not in text:
        text += "\n" + body["link"]
    return text


# a report's files in an e-mail (attach.py): bilingual, as the report's own text is
NOTES = {
    "attached": "附件 / Attached: %s",
    "missing": "文件缺失，未附上 / File missing, not attached: %s",
    "changed": "文件与报告生成时记录的 SHA-256 不符，未附上 / File not as the report recorded it "
               "(SHA-256), not attached: %s",
    "too_big": "附件合计 %.1f MB，超过 %.0f MB 上限，未附上 / The files total %.1f MB, over the "
               "%.0f MB limit: not attached",
    "link": "请从监管平台下载 / Download them from the console: %s",
    "no_link": "请向监管平台索取 / Ask the regulator's console for them",
}  # fmt: skip


def attachment_notes(attached: list[str], problems: list[tuple[str, str]], total: int | None,
                     cap: int, link: str | None) -> list[str]:  # fmt: skip
    """What the reader is told about the report's files: those attached, those not and why
    (problems: ("missing" | "changed", file name)), total: the files' bytes when over cap."""
    out = [NOTES["attached"] % ", ".join(attached)] if attached else []
    out += [NOTES[what] % plain(name, 200) for what, name in problems]
    if total is not None:
        mb, cap_mb = total / (1 << 20), cap / (1 << 20)
        out.append(NOTES["too_big"] % (mb, cap_mb, mb, cap_mb))
    if problems or total is not None:
        out.append(NOTES["link"] % link if link else NOTES["no_link"])
    return out
