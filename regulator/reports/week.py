"""An ISO 8601 week as the districts count it: Monday 00:00 to the next Monday 00:00 in
Asia/Shanghai (UTC+8 all year: China has kept no daylight saving time since 1991, so every week
is exactly 7 × 24 h)."""

from __future__ import annotations

import datetime
import re
import zoneinfo
from dataclasses import dataclass

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")
_SPELLING = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True)
class Week:
    year: int
    number: int

    @property
    def name(self) -> str:
        return "%04d-W%02d" % (self.year, self.number)

    @property
    def start(self) -> datetime.datetime:
        """Monday 00:00 in Asia/Shanghai (aware)."""
        day = datetime.date.fromisocalendar(self.year, self.number, 1)
        return datetime.datetime.combine(day, datetime.time(), ZONE)

    @property
    def end(self) -> datetime.datetime:
        """The next Monday 00:00: the week is [start, end)."""
        return self.start + datetime.timedelta(days=7)


def parse(text: str) -> Week:
    """"2026-W48" (ValueError: not a week, or a week 53 the year does not have)."""
    m = _SPELLING.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError("--week %r: an ISO week, e.g. 2026-W48" % (text,))
    year, number = int(m.group(1)), int(m.group(2))
    try:
        datetime.date.fromisocalendar(year, number, 1)
    except ValueError:
        raise ValueError("--week %s: %d has no week %d" % (text, year, number)) from None
    if not 2000 <= year <= 2100:
        raise ValueError("--week %s: not a plausible year" % text)
    return Week(year, number)


def containing(t: datetime.datetime) -> Week:
    iso = t.astimezone(ZONE).date().isocalendar()
    return Week(iso.year, iso.week)


def last_ended(now: datetime.datetime) -> Week:
    """The week that ended most recently at `now` (the one before the week now is in)."""
    return containing(containing(now).start - datetime.timedelta(days=1))


def check_over(week: Week, now: datetime.datetime) -> None:
    """ValueError unless the week has ended: a week's figures are reported once it is over."""
    if week.end > now:
        raise ValueError("--week %s: ends %s, not over yet (a week is reported once it has ended)"
                         % (week.name, week.end.isoformat(sep=" ", timespec="minutes")))
