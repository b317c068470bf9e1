"""E-mail by SMTP: the standard library's smtplib in a thread.

smtplib rather than aiosmtplib: a few messages a minute at most (one per contact per step), so a
thread per send costs nothing and the regulator gains no runtime dependency. A report's files
are named by their path on the regulator's disk in the text, never attached (docs/design.md
§9.1: the file stays where the report made it; mail size limits never bite).
"""

from __future__ import annotations

import asyncio
import email.message
import email.utils
import smtplib
import ssl

from .. import messages
from ..config import Channel
from .base import MESSAGE_ID_HEADER, Adapter, Failed, Outgoing


class Smtp(Adapter):
    def __init__(self, spec: Channel) -> None:
        o = spec.options
        self.name, self.host = spec.name, o["host"]
        self.security = o.get("security", "ssl")
        self.port = o.get("port", {"ssl": 465, "starttls": 587, "none": 25}[self.security])
        self.sender, self.username = o["sender"], o.get("username")
        self.timeout = o.get("timeout_s", 10)
        self._password = spec.secrets.get("password")

    def _message(self, msg: Outgoing) -> email.message.EmailMessage:
        m = email.message.EmailMessage()
        m["From"], m["To"] = self.sender, msg.recipient
        m["Subject"] = messages.plain(msg.body.get("title", ""), 200)
        m["Message-ID"] = "<%s@gasguard>" % msg.message_id  # stable: mail clients dedupe too
        m[MESSAGE_ID_HEADER] = msg.message_id
        m["Date"] = email.utils.formatdate(localtime=False)
        m.set_content(messages.text_of(msg.body))
        return m

    def _send(self, msg: Outgoing) -> str:
        try:
            mail = self._message(msg)
        except ValueError as e:  # a header the mail library refuses: no retry will mend it
            raise Failed(
                "smtp: the message cannot be built: %s" % str(e)[:200], retry=False
            ) from None
        ctx = ssl.create_default_context()
        try:
            if self.security == "ssl":
                s: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                                   context=ctx)  # fmt: skip
            else:
                s = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with s:
                if self.security == "starttls":
                    s.starttls(context=ctx)
                if self.username:
                    s.login(self.username, self._password or "")
                refused = s.send_message(mail)
        except smtplib.SMTPRecipientsRefused as e:
            raise Failed("smtp refused the recipient: %s" % str(e)[:200], retry=False) from None
        except (smtplib.SMTPException, OSError) as e:
            permanent = isinstance(e, smtplib.SMTPResponseException) and 500 <= e.smtp_code < 600
            raise Failed("smtp: %s" % str(e)[:200], retry=not permanent) from None
        if refused:
            raise Failed("smtp refused: %s" % refused, retry=False)
        return "smtp ok"

    async def send(self, msg: Outgoing) -> str:
        return await asyncio.to_thread(self._send, msg)
