"""notify.toml: channels, contacts, escalation chains, forwarding (docs/regulator.md, "Notify").

Checked whole at the boundary: every problem is one line naming the file's line ("notify.toml
line 12: [channels.ding] unknown key 'secrett'"), and the command exits 2. Secrets are never in
the file: a channel names an environment variable (`secret_env`) or a file (`secret_file`) and
the value read from it is never printed; a variable that is not set is an error at start, not
at the first alarm.
"""

from __future__ import annotations

import datetime
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gasguard.gateway.config import is_loopback

from ..registry import LEVELS

MAX_BYTES = 1 << 20  # a city's whole contact list fits many times over
MAX_ITEMS = 10_000  # contacts, channels, steps: one bound, far above any city
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
# a step's delay: a year at most. More is a typo, and `since + after` past datetime's range
# raised in every escalation tick, so no step of any subject fired again
MAX_AFTER = datetime.timedelta(days=365)
ROBOTS = ("wecom", "dingtalk", "feishu")
TYPES = (*ROBOTS, "smtp", "sms", "voice", "forward", "mqtt")
SECRETS = {  # type: the secrets it takes (each as NAME_env or NAME_file)
    "wecom": ("key",), "dingtalk": ("token", "secret"), "feishu": ("secret",),
    "smtp": ("password",), "sms": ("token",), "voice": ("token",),
    "forward": ("hmac_secret", "ed25519_key"), "mqtt": ("password",),
}  # fmt: skip
OPTIONS = {  # type: its other keys
    "wecom": ("url",), "dingtalk": ("url",), "feishu": ("url",),
    "smtp": ("host", "port", "security", "username", "sender", "timeout_s", "attach_max_mb"),
    "sms": ("url", "timeout_s"), "voice": ("url", "timeout_s"),
    "forward": ("url", "key_id", "timeout_s"), "mqtt": ("url", "topic", "username"),
}  # fmt: skip
REQUIRED = {"smtp": ("host", "sender"), "mqtt": ("url", "topic")}
TOP = {"base_url", "language", "delivery", "channels", "contacts", "owner", "escalation",
       "forward", "reports"}  # fmt: skip
DELIVERY = {"attempts": (1, 1000), "backoff_s": (0.01, 3600), "backoff_cap_s": (0.01, 86400),
            "give_up_after_s": (1, 30 * 86400), "timeout_s": (0.1, 300),
            "lease_s": (1, 3600), "concurrency": (1, 256), "poll_s": (0.01, 10),
            "tick_s": (0.05, 10)}  # fmt: skip


class ConfigError(ValueError):
    """One line per problem, each naming the line of the file (exit 2)."""


@dataclass(frozen=True)
class Channel:
    name: str
    type: str
    options: dict[str, Any]
    secrets: dict[str, str] = field(repr=False)  # never printed: repr leaves them out

    def __repr__(self) -> str:
        return "Channel(%s, %s)" % (self.name, self.type)


@dataclass(frozen=True)
class Contact:
    node: str  # a registry node id ("上海市/区01/街道3"): its units and everything below
    role: str  # a level of the tree (city, district, street, grid) or any duty name
    channel: str
    to: str  # phone, e-mail address; "" for a robot (the webhook is the group)
    name: str = ""
    language: str = "zh"


@dataclass(frozen=True)
class Step:
    after: datetime.timedelta
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Delivery:
    attempts: int = 20
    backoff_s: float = 1.0
    backoff_cap_s: float = 60.0
    give_up_after_s: float = 24 * 3600
    timeout_s: float = 10.0
    lease_s: float = 60.0
    concurrency: int = 32
    poll_s: float = 0.05  # SQLite: how often the outbox is looked at (PostgreSQL: LISTEN)
    tick_s: float = 0.2  # escalation deadlines checked this often: a step fires within 1 s


@dataclass(frozen=True)
class Config:
    base_url: str
    language: str = "zh"
    delivery: Delivery = Delivery()
    channels: dict[str, Channel] = field(default_factory=dict)
    contacts: tuple[Contact, ...] = ()
    owner_channels: tuple[str, ...] = ()
    owner_language: str = "zh"
    chains: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    forward_channels: tuple[str, ...] = ()
    report_recipients: tuple[tuple[str, str], ...] = ()
    report_dir: str | None = None


class _Lines:
    """Where a table or key is in the text: tomllib reports only syntax errors' lines."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def find(self, table: str, key: str | None = None, index: int = 0) -> int:
        header = re.compile(r"^\s*\[\[?\s*%s\s*\]\]?\s*(#.*)?$" % re.escape(table))
        start, seen = 0, -1
        if table:
            for n, line in enumerate(self.lines):
                if header.match(line):
                    seen += 1
                    if seen == index:
                        start = n + 1
                        break
            else:
                return self._key(0, table.split(".")[-1]) or 1
        if key is None:
            return start or 1
        return self._key(start, key) or start or 1

    def _key(self, start: int, key: str) -> int:
        pat = re.compile(r"^\s*\"?%s\"?\s*=" % re.escape(key))
        for n in range(start, len(self.lines)):
            if n > start and self.lines[n].lstrip().startswith("[") and start:
                break
            if pat.match(self.lines[n]):
                return n + 1
        return 0

    def err(self, problems: list[str], table: str, key: str | None, msg: str,
            index: int = 0) -> None:  # fmt: skip
        problems.append("%s line %d: %s" % (self.path, self.find(table, key, index), msg))


def duration(text: Any) -> datetime.timedelta:
    m = DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError("%r is not a duration (e.g. \"0s\", \"5m\", \"1.5h\", \"300ms\")"
                         % (text,))  # fmt: skip
    seconds = float(m.group(1)) * UNITS[m.group(2)]
    if seconds > MAX_AFTER.total_seconds():
        raise ValueError("after %r: more than %d days" % (text, MAX_AFTER.days))
    return datetime.timedelta(seconds=seconds)


def check_url(url: Any, schemes: tuple[str, ...] = ("https", "http")) -> str:
    """A URL we will send to: https (http and mqtt:// only to loopback, for tests and a local
    relay); no credentials in it (they would be logged with it)."""
    if not isinstance(url, str) or len(url) > 2000 or any(c in url for c in "\r\n\t "):
        raise ValueError("not a URL")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in schemes or not u.hostname:
        raise ValueError("%r: want %s://HOST/..." % (url[:80], schemes[0]))
    if u.username or u.password:
        raise ValueError("credentials in the URL: name an environment variable instead")
    if u.scheme in ("http", "mqtt") and not is_loopback(u.hostname):
        raise ValueError("plaintext %s:// to %s: only to loopback" % (u.scheme, u.hostname))
    return url


def _secret(spec: dict[str, Any], name: str) -> str | None:
    env, path = spec.get(name + "_env"), spec.get(name + "_file")
    if env is not None and path is not None:
        raise ValueError("%s_env and %s_file: one of them" % (name, name))
    if env is not None:
        if not isinstance(env, str) or not env:
            raise ValueError("%s_env: a variable name" % name)
        value = os.environ.get(env)
        if not value:
            raise ValueError("%s_env: environment variable %s is not set" % (name, env))
        return value
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, TypeError, UnicodeDecodeError) as e:
            raise ValueError("%s_file: %s" % (name, getattr(e, "strerror", None) or e)) from None
        if not value:
            raise ValueError("%s_file %s: empty" % (name, path))
        return value
    return None


def _channel(name: str, spec: Any) -> Channel:
    if not isinstance(spec, dict):
        raise ValueError("a table")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ValueError("type %r: one of %s" % (kind, ", ".join(TYPES)))
    allowed = {"type", *OPTIONS[kind]}
    for s in SECRETS[kind]:
        allowed |= {s + "_env", s + "_file"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError("unknown key %r (%s takes %s)"
                         % (unknown[0], kind, ", ".join(sorted(allowed))))  # fmt: skip
    for key in REQUIRED.get(kind, ("url",)):
        if key not in spec:
            raise ValueError("%s needs %r" % (kind, key))
    opts = {k: v for k, v in spec.items() if k in OPTIONS[kind]}
    if "url" in opts:
        schemes = ("mqtts", "mqtt") if kind == "mqtt" else ("https", "http")
        check_url(opts["url"], schemes)
    for k in ("host", "sender", "username", "topic", "key_id", "security"):
        if k in opts and (not isinstance(opts[k], str) or not opts[k] or len(opts[k]) > 200
                          or any(c in opts[k] for c in "\r\n")):  # fmt: skip
            raise ValueError("%s: a one-line string" % k)
    if opts.get("security", "ssl") not in ("ssl", "starttls", "none"):
        raise ValueError("security: ssl, starttls or none")
    if kind == "smtp" and opts.get("security") == "none" and not is_loopback(opts["host"]):
        raise ValueError('security = "none" only to a loopback relay')
    port = opts.get("port", 465)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError("port: 1 to 65535")
    t = opts.get("timeout_s", 10)
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0.1 <= t <= 300:
        raise ValueError("timeout_s: 0.1 to 300")
    cap = opts.get("attach_max_mb", 10)
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 <= cap <= 50:
        raise ValueError("attach_max_mb: 0 to 50 (0: reports go as a link only)")
    secrets = {s: v for s in SECRETS[kind] if (v := _secret(spec, s)) is not None}
    if kind in ROBOTS and kind != "wecom" and "secret" not in secrets:
        raise ValueError("%s: secret_env or secret_file (the robot's signing secret)" % kind)
    if kind == "wecom" and "key" not in secrets and "key=" not in opts["url"]:
        raise ValueError("wecom: key_env or key_file (the robot's key)")
    if kind == "forward" and not secrets:
        raise ValueError("forward: hmac_secret_env/_file or ed25519_key_file (unsigned: no)")
    if kind == "forward" and "ed25519_key" in secrets:
        from gasguard.protocol import record

        try:
            record.load_private(secrets["ed25519_key"].encode())
        except Exception as e:  # whatever the key loader refuses: bad input, said in a line
            raise ValueError("ed25519_key: %s" % (str(e) or type(e).__name__)) from None
    return Channel(name, kind, opts, secrets)


def _strings(v: Any, what: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("%s: a list of names" % what)
    if len(v) > MAX_ITEMS:
        raise ValueError("%s: more than %d" % (what, MAX_ITEMS))
    return tuple(v)


def parse(text: str, path: str = "notify.toml") -> Config:
    lines = _Lines(path, text)
    if len(text.encode()) > MAX_BYTES:
        raise ConfigError("%s: %d bytes, more than %d" % (path, len(text.encode()), MAX_BYTES))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message names the line and column
        raise ConfigError("%s: %s" % (path, e)) from None
    problems: list[str] = []
    for k in sorted(set(doc) - TOP):
        lines.err(problems, "", k, "unknown key %r (one of %s)" % (k, ", ".join(sorted(TOP))))
    base = doc.get("base_url")
    try:
        check_url(base)
    except ValueError as e:
        lines.err(problems, "", "base_url", "base_url (the console, for links): %s" % e)
    language = doc.get("language", "zh")
    if language not in ("zh", "en"):
        lines.err(problems, "", "language", "language: zh or en")
    delivery = _delivery(doc.get("delivery", {}), lines, problems)
    chans = doc.get("channels", {})
    channels: dict[str, Channel] = {}
    if not isinstance(chans, dict) or len(chans) > MAX_ITEMS:
        lines.err(problems, "channels", None, "[channels.NAME] tables, at most %d" % MAX_ITEMS)
        chans = {}
    for name, spec in chans.items():
        try:
            if not NAME.match(name):
                raise ValueError("a name of 1-64 of A-Z a-z 0-9 _ . -")
            channels[name] = _channel(name, spec)
        except ValueError as e:
            bad = re.match(r"unknown key '([^']+)'", str(e))
            key = bad.group(1) if bad else None
            lines.err(problems, "channels." + name, key, "[channels.%s] %s" % (name, e))
    for c in channels.values():  # a channel without its own deadline takes the delivery's
        c.options.setdefault("timeout_s", delivery.timeout_s)
    # a lease shorter than a send: the row is due again while its receiver is still answering,
    # claimed again and sent twice at once (SMTP's timeout is per step: twice, for its steps)
    longest = max([delivery.timeout_s] + [c.options["timeout_s"] for c in channels.values()])
    if delivery.lease_s < 2 * longest:
        lines.err(problems, "delivery", "lease_s", "[delivery] lease_s %g: at least twice the "
                  "longest timeout_s (%g), or a send still waiting is claimed and sent again"
                  % (delivery.lease_s, longest))  # fmt: skip
    contacts = _contacts(doc.get("contacts", []), channels, lines, problems)
    owner = doc.get("owner", {})
    owner_channels: tuple[str, ...] = ()
    if not isinstance(owner, dict) or set(owner) - {"channels", "language"}:
        lines.err(problems, "owner", None, "[owner]: channels = [...], language")
    else:
        try:
            owner_channels = _strings(owner.get("channels", []), "[owner] channels")
            for c in owner_channels:
                # the registry keeps the responsible person's phone, not an e-mail address
                if c not in channels or channels[c].type not in ("sms", "voice"):
                    raise ValueError("[owner] channels: %r is not an sms or voice channel "
                                     "above" % c)  # fmt: skip
        except ValueError as e:
            lines.err(problems, "owner", "channels", str(e))
    chains = _chains(doc.get("escalation", {}), contacts, owner_channels, lines, problems)
    forward = doc.get("forward", {})
    fwd: tuple[str, ...] = ()
    try:
        if not isinstance(forward, dict) or set(forward) - {"channels"}:
            raise ValueError("[forward]: channels = [...]")
        fwd = _strings(forward.get("channels", []), "[forward] channels")
        for c in fwd:
            if c not in channels or channels[c].type not in ("forward", "mqtt"):
                raise ValueError("[forward] channels: %r is not a forward or mqtt channel" % c)
    except ValueError as e:
        lines.err(problems, "forward", "channels", str(e))
    reports = doc.get("reports", {})
    recipients: tuple[tuple[str, str], ...] = ()
    try:
        if not isinstance(reports, dict) or set(reports) - {"recipients", "dir"}:
            raise ValueError("[reports]: recipients = [[channel, to], ...], dir")
        got = reports.get("recipients", [])
        if not isinstance(got, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            and p[0] in channels for p in got
        ):  # fmt: skip
            raise ValueError("[reports] recipients: [[channel, to], ...] of channels above")
        recipients = tuple((p[0], p[1]) for p in got)
    except ValueError as e:
        lines.err(problems, "reports", "recipients", str(e))
    if problems:
        raise ConfigError("\n".join(problems))
    return Config(base_url=base.rstrip("/"), language=language, delivery=delivery,
                  channels=channels, contacts=contacts, owner_channels=owner_channels,
                  owner_language=owner.get("language", language), chains=chains,
                  forward_channels=fwd, report_recipients=recipients,
                  report_dir=reports.get("dir"))  # fmt: skip


def _delivery(spec: Any, lines: _Lines, problems: list[str]) -> Delivery:
    if not isinstance(spec, dict):
        lines.err(problems, "delivery", None, "[delivery]: a table")
        return Delivery()
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k not in DELIVERY:
            lines.err(problems, "delivery", k, "[delivery] unknown key %r" % k)
            continue
        lo, hi = DELIVERY[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            lines.err(problems, "delivery", k, "[delivery] %s: %s to %s" % (k, lo, hi))
            continue
        out[k] = int(v) if k in ("attempts", "concurrency") else float(v)
    return Delivery(**out)


def _contacts(spec: Any, channels: dict[str, Channel], lines: _Lines,
              problems: list[str]) -> tuple[Contact, ...]:  # fmt: skip
    if not isinstance(spec, list) or len(spec) > MAX_ITEMS:
        lines.err(problems, "contacts", None, "[[contacts]]: at most %d" % MAX_ITEMS)
        return ()
    out = []
    keys = {"node", "role", "channel", "to", "name", "language"}
    for i, c in enumerate(spec):
        try:
            if not isinstance(c, dict):
                raise ValueError("a table")
            unknown = sorted(set(c) - keys)
            if unknown:
                raise ValueError("unknown key %r" % unknown[0])
            node = c.get("node")
            if not isinstance(node, str) or not node or len(node) > 500:
                raise ValueError('node: a registry node id ("上海市/区01/街道3")')
            depth = len(node.split("/"))
            role = c.get("role", LEVELS[depth - 1] if depth <= len(LEVELS) else None)
            if not isinstance(role, str) or not ROLE.match(role) or role == "owner":
                raise ValueError(
                    "role: a level (%s) or a duty name, not owner (the unit's "
                    "responsible person, from the registry)" % ", ".join(LEVELS)
                )
            ch = c.get("channel")
            if ch not in channels or channels[ch].type in ("forward", "mqtt"):
                raise ValueError("channel %r: not a message channel above" % (ch,))
            to = c.get("to", "")
            if not isinstance(to, str) or len(to) > 200 or any(x in to for x in "\r\n<>,;"):
                raise ValueError("to: one phone number or address")
            if not to and channels[ch].type not in ROBOTS:
                raise ValueError("to: needed for a %s channel" % channels[ch].type)
            name = c.get("name", "")
            if not isinstance(name, str) or len(name) > 100:
                raise ValueError("name: up to 100 characters")
            lang = c.get("language", "zh")
            if lang not in ("zh", "en"):
                raise ValueError("language: zh or en")
            out.append(Contact(node.strip("/"), role, ch, to, name, lang))
        except ValueError as e:
            bad = re.match(r"unknown key '([^']+)'", str(e))
            lines.err(problems, "contacts", bad.group(1) if bad else None,
                      "[[contacts]] #%d: %s" % (i + 1, e), index=i)  # fmt: skip
    return tuple(out)


def _chains(spec: Any, contacts: tuple[Contact, ...], owner: tuple[str, ...], lines: _Lines,
            problems: list[str]) -> dict[str, tuple[Step, ...]]:  # fmt: skip
    if not isinstance(spec, dict):
        lines.err(problems, "escalation", None, "[escalation.SEVERITY]: tables")
        return {}
    roles = {c.role for c in contacts} | ({"owner"} if owner else set())
    out = {}
    for sev, chain in spec.items():
        where = "escalation." + sev
        try:
            if sev not in ("high", "low", "workorder"):
                raise ValueError("a chain for high, low or workorder")
            if not isinstance(chain, dict) or set(chain) != {"steps"}:
                raise ValueError('steps = [{after = "0s", roles = [...]}, ...]')
            steps, last = [], None
            if not isinstance(chain["steps"], list) or not 0 < len(chain["steps"]) <= 100:
                raise ValueError("steps: 1 to 100")
            for n, st in enumerate(chain["steps"]):
                if not isinstance(st, dict) or set(st) - {"after", "roles"}:
                    raise ValueError("step %d: {after, roles}" % (n + 1))
                after = duration(st.get("after"))
                if last is not None and after <= last:
                    raise ValueError("step %d: after must grow step by step" % (n + 1))
                rs = _strings(st.get("roles"), "step %d roles" % (n + 1))
                for r in rs:
                    if r not in roles:
                        raise ValueError("step %d: role %r has no contact" % (n + 1, r))
                steps.append(Step(after, rs))
                last = after
            out[sev] = tuple(steps)
        except ValueError as e:
            lines.err(problems, where, "steps", "[%s] %s" % (where, e))
    return out


def load(path: str | Path) -> Config:
    """ConfigError (exit 2) for anything wrong, with every problem's line."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            raise ConfigError("%s: more than %d bytes" % (p, MAX_BYTES))
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("%s: %s" % (p, getattr(e, "strerror", None) or e)) from None
    return parse(text, str(p))
