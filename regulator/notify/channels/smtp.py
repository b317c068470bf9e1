"""E-mail by SMTP: the standard library's smtplib in a thread.

smtplib rather than aiosmtplib: a few messages a minute at most (one per contact per step), so a
thread per send costs nothing and the regulator gains no runtime dependency. A weekly report's
PDF and XLSX are attached (read at send time, checked against the SHA-256 the report recorded,
up to `attach_max_mb` in all: notify/attach.py); a file missing, changed or too large is said in
the text beside the link to the report's console page, and the message goes all the same.
"""

from __future__ import annotations

import asyncio
import email.message
import email.utils
import smtplib
import ssl

from .. import attach, messages
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
        self.attach_max = int(o.get("attach_max_mb", attach.ATTACH_MAX / (1 << 20)) * (1 << 20))

    def _message(self, msg: Outgoing) -> email.message.EmailMessage:
        m = email.message.EmailMessage()
        m["From"], m["To"] = self.sender, msg.recipient
        m["Subject"] = messages.plain(msg.body.get("title", ""), 200)
        m["Message-ID"] = "<%s@gasguard>" % msg.message_id  # stable: mail clients dedupe too
        m[MESSAGE_ID_HEADER] = msg.message_id
        m["Date"] = email.utils.formatdate(localtime=False)
        parts, notes = attach.files(msg.body, self.attach_max)
        m.set_content("\n".join([messages.text_of(msg.body), *notes]))
        # email's policy spells a UTF-8 file name as RFC 2231 filename*=. No Content-Type
        # name= beside it: Python 3.11 folds a long type with a non-ASCII parameter into
        # encoded words, breaking the XLSX's MIME type (tests/regulator/test_report_mail.py)
        for p in parts:
            m.add_attachment(p.data, p.maintype, p.subtype, filename=p.name)
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
