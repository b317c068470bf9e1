"""HTML to PDF with the machine's headless Chromium: the one seam every printed document goes
through (the commissioning record, the regulator's weekly reports).

Chromium rather than a PDF library: the documents are bilingual HTML already (Jinja2
templates), Chromium lays out Chinese with the system's fonts (scripts/setup.sh installs
fonts-wqy-zenhei; without a CJK font the characters print as empty boxes), and it is the browser
the console's tests drive. No network: the page is a local file of our own escaped template.
(Chromium 156 prints nothing with --blink-settings=scriptEnabled=false, so scripts are not
switched off: put none in a printed page.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60.0


class PdfError(RuntimeError):
    """No Chromium, or it did not print (the message says which)."""


def chromium() -> str:
    """The browser to print with: $GASGUARD_CHROMIUM, else the first on PATH."""
    named = os.environ.get("GASGUARD_CHROMIUM")
    if named:
        return named
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise PdfError("no Chromium to print the PDF with (apt-get install chromium, or set "
                   "GASGUARD_CHROMIUM): the HTML and JSON are written")


def html_to_pdf(html: str, out: Path, browser: str | None = None,
                exclusive: bool = False) -> Path:  # fmt: skip
    """Print `html` to the PDF file `out` (written whole or not at all). exclusive: never over
    a file (or a symlink) at `out`, FileExistsError instead (a signed record's PDF)."""
    exe = browser or chromium()
    with tempfile.TemporaryDirectory(prefix="gasguard-pdf-") as tmp:
        page, pdf = Path(tmp) / "page.html", Path(tmp) / "out.pdf"
        page.write_text(html, encoding="utf-8")
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
                "--no-pdf-header-footer",
                "--user-data-dir=" + str(Path(tmp) / "profile"),
                "--print-to-pdf=" + str(pdf), page.as_uri()]  # fmt: skip
        try:
            got = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PdfError("Chromium (%s) did not print: %s" % (exe, e)) from None
        if got.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
            tail = got.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise PdfError("Chromium (%s) did not print (exit %d) %s"
                           % (exe, got.returncode, tail[0][:200]))  # fmt: skip
        # a part file of a new name, made here (O_EXCL): a fixed "<out>.part" was opened through
        # whatever symlink another user had planted at it, the PDF written into that file
        fd, part = tempfile.mkstemp(dir=out.parent, prefix="." + out.name + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f, open(pdf, "rb") as src:
                shutil.copyfileobj(src, f)
                os.fchmod(f.fileno(), 0o644)  # a document to read, as copyfile made it (not 0600)
            if exclusive:
                os.link(part, out)  # EEXIST for anything at out since: never replaced
            else:
                os.replace(part, out)
        finally:
            if os.path.lexists(part):
                os.unlink(part)
    return out
