"""How things are shown to people, the same in every command's output (commission, demo, bench,
the regulator's console): detectors, times, figures that may be missing, and tables.

A detector is "detector N", N its place in the config's `detectors` list counted from 1 (the
event stream carries that place counted from 0), followed by its Modbus address where the command
knows it. Times are local with the zone's offset shown (the stream's are UTC). A missing figure
is "—", never "None". Tables are drawn by rich, as plain text (no colour: they go to logs too).
"""

from __future__ import annotations

import datetime
import io
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

MISSING = "—"


def detector(index: int | None, address: int | None = None) -> str:
    """index: the place in the config's list counted from 0, as events carry it."""
    if index is None:
        return "detector at Modbus address %s" % address if address is not None else "detector"
    name = "detector %d" % (index + 1)
    return name if address is None else "%s (Modbus address %d)" % (name, address)


def detector_in(config: dict, address: Any) -> str:
    """The detector at address, named by its place in config's `detectors` list."""
    addresses = [d.get("address") for d in config.get("detectors") or [] if isinstance(d, dict)]
    index = addresses.index(address) if address in addresses else None
    return detector(index, address)


def local_time(when: str | datetime.datetime | None) -> str:
    """An ISO 8601 time (the stream's, in UTC) as this machine's local time, with its offset:
    2026-11-30 21:05:12 +08:00. A missing or unreadable time is "—" or shown as it came."""
    if when is None or when == "":
        return MISSING
    if isinstance(when, str):
        try:
            when = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            return when
    if when.tzinfo is None:  # a naive time is taken as UTC, as the stream's are
        when = when.replace(tzinfo=datetime.UTC)
    text = when.astimezone().isoformat(sep=" ", timespec="seconds")
    return text[:19] + " " + text[19:]  # 2026-11-30 21:05:12 +08:00


def figure(value: Any, fmt: str = "%s", none: str = MISSING) -> str:
    """value formatted, or none (e.g. "no alarms yet") when it is missing."""
    return none if value is None else fmt % value


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """A table as plain text, as wide as the terminal (or 120 columns in a file or pipe)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(*columns, box=box.SIMPLE_HEAD, pad_edge=False)
    for row in rows:  # Text, not markup: a "[GB 50028 §10.8.2]" in a cell is shown, not eaten
        t.add_row(*(Text(MISSING if v is None else str(v)) for v in row))
    out = io.StringIO()
    width = shutil.get_terminal_size((120, 24)).columns
    Console(file=out, width=width, color_system=None, highlight=False).print(t)
    text = "\n".join(line.rstrip() for line in out.getvalue().splitlines()).strip("\n")
    return "%s\n%s" % (title, text) if title else text


def figures(out: dict[str, Any], title: str | None = None) -> str:
    """A benchmark's figures as a two-column table: the scalar ones, nested ones flattened one
    level (latency.p99_ms); lists are left to the JSON file."""
    rows = []
    for key, value in out.items():
        if isinstance(value, dict):
            rows += [
                ("%s.%s" % (key, k), v) for k, v in value.items() if not isinstance(v, list | dict)
            ]
        elif not isinstance(value, list):
            rows.append((key, value))
    return table(("figure", "value"), rows, title=title)
