"""The console's languages: zh-CN by default, English the switch. Templates are written with
English msgids; locale/<lang>/LC_MESSAGES/messages.po holds each translation, compiled by Babel
when the console starts (no .mo in the repository, no build step: a .po edit shows on restart)."""

from __future__ import annotations

import functools
import gettext
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCALE_DIR = Path(__file__).parent / "locale"
LANGS = {"zh_CN": "中文", "en": "English"}  # the first is the default
DEFAULT = "zh_CN"


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    if lang not in LANGS or lang == "en":
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def html_lang(lang: str) -> str:
    return "zh-CN" if lang == "zh_CN" else "en"


def refusal(t: gettext.NullTranslations, msgid: str, params: dict[str, Any],
            local: Callable[[str], str]) -> str:  # fmt: skip
    """A regulator.refusal.Refusal in t's language: a `field` value is a form field's name
    (translated too), a `status` a hazard's, a `state` a work order's, a `step` and a `verdict`
    theirs, a time (`deadline`, `*_at`) shown local."""
    shown = dict(params)
    if isinstance(shown.get("field"), str):
        shown["field"] = t.pgettext("field", shown["field"])
    for key, context in (("status", "hazard"), ("state", "work order"), ("step", "step"),
                         ("verdict", "verdict")):  # fmt: skip
        if isinstance(shown.get(key), str):
            shown[key] = t.pgettext(context, shown[key])
    for k, v in params.items():
        if (k == "deadline" or k.endswith("_at")) and isinstance(v, str):
            try:
                shown[k] = local(v)
            except (ValueError, OverflowError):  # shown as stored: a message must never fail
                shown[k] = v
    return t.gettext(msgid) % shown
