"""The weekly report per district (issue 25): what a district's week was, as PDF and XLSX, made
on schedule and sent through the notification outbox.

    week.py      an ISO week's bounds in Asia/Shanghai (Monday 00:00 to Monday 00:00)
    figures.py   the week's figures from the ledger, each with its definition
    render.py    bilingual HTML (Jinja2) → PDF (tools/pdf.py), XLSX (openpyxl), file names
    schedule.py  which district weeks are due, made once and enqueued per recipient
    command.py   `gasguard regulator report`
"""
