"""The regulator's web console (issue 24): accounts.py (logins, roles, scope), app.py (the pages,
SSE and the JSON API behind the login), i18n.py (zh-CN and English), templates/, static/."""
