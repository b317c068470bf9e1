"""A report's files for an e-mail: read at send time from the paths in the body, each checked
against the SHA-256 the report recorded, under a total size cap.

Whatever is wrong with a file, the message still goes (with the link, saying what is wrong):
a missing or changed file will not come back by retrying, and a district officer told nothing
would not know the report exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..reports import made
from . import messages

ATTACH_MAX = 10 << 20  # bytes of files a mail carries (base64 makes it 13.3 MB on the wire)


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    maintype: str
    subtype: str


def files(body: dict[str, Any], cap: int = ATTACH_MAX) -> tuple[list[Part], list[str]]:
    """(the parts to attach, the lines telling the reader what was or was not attached)."""
    listed = body.get("attachments")
    paths = [str(p) for p in listed] if isinstance(listed, list) else []
    if not paths:
        return [], []
    digests = body.get("sha256") if isinstance(body.get("sha256"), dict) else {}
    named = [(p, Path(p).name) for p in paths]
    problems: list[tuple[str, str]] = []  # (what, file name)
    sizes: dict[str, int] = {}
    for p, name in named:
        if Path(name).suffix.lstrip(".") not in made.MIME or messages.plain(name, 200) != name:
            problems.append(("changed", name))  # not a report's file: never sent as one
            continue
        try:
            sizes[p] = os.stat(p).st_size
        except OSError:
            problems.append(("missing", name))
    total = sum(sizes.values())
    parts: list[Part] = []
    if total > cap:  # none attached: the link carries both
        return [], messages.attachment_notes([], problems, total, cap, body.get("link"))
    for p, name in named:
        if p not in sizes:
            continue
        try:
            data = made.read(p, digests.get(name), cap)
        except made.FileMissing:
            problems.append(("missing", name))
            continue
        except made.FileChanged:
            problems.append(("changed", name))
            continue
        mime = made.MIME[Path(name).suffix.lstrip(".")].split("/", 1)
        parts.append(Part(name, data, mime[0], mime[1]))
    notes = messages.attachment_notes([p.name for p in parts], problems, None, cap,
                                      body.get("link"))  # fmt: skip
    return parts, notes
