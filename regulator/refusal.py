"""A refusal a person reads: English as str() (the command line), and its message id and values
apart, so the web console can say it in the reader's language from its catalog
(regulator/web/locale). A value named `field` is itself a message id (a form field's name)."""

from __future__ import annotations

from typing import Any


class Refusal(ValueError):
    def __init__(self, msgid: str, **params: Any) -> None:
        super().__init__(msgid % params)
        self.msgid, self.params = msgid, params
