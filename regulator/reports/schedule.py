"""The weekly reports on schedule: for a given now, the week just ended is due for every district,
made once and enqueued once per recipient through the notification outbox.

The notify core's deliverer calls, on its loop (any period; a loop with nothing due costs one
query a district):

    enqueue_due(store, now, recipients, out_dir, *, console_url=None, printer=None) -> list[str]

    store       an open regulator Store (writable)
    now         an aware datetime: the week just ended at now (Asia/Shanghai) is the one due
    recipients  [(channel, recipient), ...] from its own configuration, for every district
    out_dir     the directory the PDF and XLSX go to (made if missing; the e-mail attaches
                them from there, the console serves them)
    returns     the outbox keys enqueued by this call (empty when nothing was due)
    raises      tools/pdf.PdfError (no Chromium) or OSError: nothing of that district is
                enqueued, and the next call tries it again

Each message is idempotent by key = "report:" + JSON [district id, week, channel, recipient]
(JSON: a ":" in a name cannot make two tuples one key); its body {title, text, attachments:
[pdf path, xlsx path], sha256: {file name: hex}, link: the district week's console page}. A
district's week is made at most once: its files and summary are recorded in the audit log
(`report.generate`, target `report:<district id>/<week>`, by `system:report`) and in
`weekly_reports` (made.py) in the transaction that enqueues them, and a recipient added later
gets the files already made. Two deliverers at the same moment may each print the files (the
second replaces the first's, the same figures); the outbox keeps one message per key.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from .. import audit
from ..notify.outbox import enqueue
from . import made, render
from .figures import District, Report, compute, districts
from .week import Week, last_ended

ACTOR = "system:report"
ACTION = "report.generate"


def target(district_id: str, week: str) -> str:
    return "report:%s/%s" % (district_id, week)


def key(district_id: str, week: str, channel: str, recipient: str) -> str:
    return "report:" + json.dumps([district_id, week, channel, recipient], ensure_ascii=False,
                                  separators=(",", ":"))  # fmt: skip


def record(store: Any, rep: Report, files: list[Path], at: str) -> dict[str, Any]:
    """The report's audit row (inside the caller's transaction); what it recorded."""
    lines = render.summary(rep)
    title = "燃气报警周报 Weekly gas alarm report: %s %s" % (rep.district.name, rep.week.name)
    text = "\n".join([title, render.period(rep)] + ["%s / %s: %s" % (ln["zh"], ln["en"],
                                                     ln["text"]) for ln in lines])  # fmt: skip
    after = {"district": rep.district.id, "name": rep.district.name, "week": rep.week.name,
             "as_of": audit.spell(rep.as_of), "files": [str(p) for p in files],
             "sha256": {p.name: render.sha256(p) for p in files}, "title": title, "text": text,
             "figures": {ln["en"]: ln["number"] for ln in lines}}  # fmt: skip
    audit.record(store, at, ACTOR, ACTION, target(rep.district.id, rep.week.name), None, after)
    made.put(store, after, at)
    return after


def message(done: dict[str, Any], console_url: str | None) -> dict[str, Any]:
    """A report's outbox body from its audit row: the files by path with the digests recorded
    (the e-mail attaches a file only if it still has them), the link to its console page."""
    return {"title": done["title"], "text": done["text"], "attachments": done["files"],
            "sha256": done["sha256"],
            "link": made.link(console_url, done["district"], done["week"])}  # fmt: skip


def _made(store: Any, d: District, week: Week, out_dir: Path) -> dict[str, Any] | None:
    """The last report of this district and week made into out_dir, if its files are there."""
    row = store.x('SELECT "after" FROM audit WHERE target = ? AND action = ? ORDER BY id DESC '
                  "LIMIT 1", (target(d.id, week.name), ACTION)).fetchone()  # fmt: skip
    if row is None:
        return None
    got = json.loads(row[0])
    files = [Path(p) for p in got["files"]]
    if all(p.parent == out_dir and p.is_file() for p in files):
        return got
    return None


def enqueue_due(store: Any, now: datetime.datetime, recipients: list[tuple[str, str]],
                out_dir: Path, *, console_url: str | None = None,
                printer: render.Printer | None = None) -> list[str]:  # fmt: skip
    """Make and enqueue what is due at now (see the module's docstring)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(dict.fromkeys((str(c), str(r)) for c, r in recipients))
    if not pairs:
        return []
    week = last_ended(now)
    at = audit.spell(now)
    enqueued: list[str] = []
    for d in districts(store):
        keys = {pair: key(d.id, week.name, *pair) for pair in pairs}
        sql, param = store.in_list(list(keys.values()))
        have = {r[0] for r in store.x("SELECT key FROM notify_outbox WHERE key IN %s" % sql,
                                      (param,)).fetchall()}  # fmt: skip
        todo = {pair: k for pair, k in keys.items() if k not in have}
        if not todo:
            continue
        done = _made(store, d, week, out_dir)
        rep, files = None, []
        if done is None:  # printed outside any transaction: Chromium takes seconds
            rep = compute(store, d, week, now)
            files = render.write(rep, out_dir, replace=True, printer=printer)
        with store.transaction():
            if rep is not None:
                done = _made(store, d, week, out_dir) or record(store, rep, files, at)
            assert done is not None
            body = message(done, console_url)
            for (channel, recipient), k in todo.items():
                if enqueue(store, key=k, channel=channel, recipient=recipient, kind="report",
                           subject=target(d.id, week.name), site=None, body=body, at=at):
                    enqueued.append(k)
    return enqueued
