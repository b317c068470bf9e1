"""`gasguard config check` on a site: several files or a site directory (device configs, the
gateway config, its keys file) checked together. Each device config gets configcheck's own
findings; then what only the files together show:

- device keys: every device has a key in the gateway's keys file, the same one as its key_hex;
- unique device ids: the gateway tells boards apart by the id in each frame;
- heartbeat vs offline threshold: one lost heartbeat must never make a board offline;
- link settings: a cable board needs a serial port at its baud, a Wi-Fi board the TCP listener;
- the site's name, and keys nobody uses (warnings).

A finding names every (file, field) it concerns. Input that is no site (a file that is not JSON or
TOML, a directory without device configs, two gateway configs) is a ConfigFileError: exit 2.
"""

from __future__ import annotations

import datetime
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gasguard.gateway import config as gwconfig
from gasguard.tools.installer.configcheck import (
    ConfigFileError,
    Finding,
    check,
    not_regular,
    read_file,
    read_regular,
    schema,
)

# docs/gateway.md, "Clocks": a board is offline after the gateway's heartbeat_s × missed_heartbeats
# without a frame (and its TCP link is closed). Heartbeats are not re-sent: one lost on the line
# leaves two of the board's periods of silence, so the threshold must exceed twice its period.
MISSED_BEFORE_OFFLINE = 2
KEY_RULE = "device keys (docs/protocol.md, Frame: the gateway checks each frame with its key)"
ID_RULE = "unique device ids (docs/protocol.md, Frame: the device id picks the key and session)"
BEAT_RULE = (
    "heartbeat vs offline threshold (docs/gateway.md, Clocks: offline after heartbeat_s × "
    "missed_heartbeats; it must exceed %d of the board's heartbeats)" % MISSED_BEFORE_OFFLINE
)
LINK_RULE = "link settings agree (the gateway listens where the board talks)"
SITE_RULE = "one site name (the gateway publishes under its own)"
GATEWAY_RULE = "gateway config: the gateway refuses to start"
# the gateway config and its keys file (a few kB for a restaurant; 2,000 boards' keys are 300 kB):
# read no more than this, and check the size before reading
TOML_MAX_BYTES = 4 * 1024 * 1024
RECORD_PREFIX = "commissioning-"  # commission's records, often written into the site directory


@dataclass
class SiteFile:
    path: Path  # as given, for messages
    kind: str  # "device", "gateway" or "keys"
    data: Any


@dataclass
class Placed:
    """A finding and every (file, field) it concerns."""

    finding: Finding
    where: list[tuple[str, str]]

    def as_dict(self) -> dict[str, Any]:
        f, w = self.finding.as_dict(), self.where[0]
        return {
            **f,
            "file": w[0],
            "field": w[1],
            "where": [{"file": p, "field": n} for p, n in self.where],
        }

    def __str__(self) -> str:
        byfile: dict[str, list[str]] = {}
        for p, n in self.where:
            byfile.setdefault(p, []).append(n)
        at = "; ".join("%s: %s" % (p, ", ".join(ns)) for p, ns in byfile.items())
        f = self.finding
        return "%-7s %s: %s [%s]" % (f.level, at, f.message, f.rule)


@dataclass
class Site:
    files: list[SiteFile]
    skipped: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # skipped, and why: not regular
    directory: bool = False  # given as a directory: every device's config should be in it

    def of(self, kind: str) -> list[SiteFile]:
        return [f for f in self.files if f.kind == kind]


# --- reading the site ------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    raw = read_regular(path, TOML_MAX_BYTES, "TOML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError("TOML files are UTF-8: this one is not") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError("not valid TOML: %s" % e) from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise ConfigFileError("not valid TOML: nested too deep") from None


def _read(path: Path, kind: str | None = None) -> SiteFile:
    """One input file as a SiteFile; ConfigFileError (with the file's name) if it is none.
    kind "keys": the file the gateway config names as its keys, whatever its name."""
    try:
        if kind is None and path.suffix != ".toml":
            return SiteFile(path, "device", read_file(path)[1])
        data = _read_toml(path)
    except ConfigFileError as e:
        raise ConfigFileError("%s: %s" % (path, e)) from None
    if kind == "keys":
        return SiteFile(path, "keys", data)
    if isinstance(data.get("gateway"), dict):
        return SiteFile(path, "gateway", data)
    if "keys" in data:
        return SiteFile(path, "keys", data)
    raise ConfigFileError(
        "%s: neither a gateway config ([gateway]) nor a keys file ([keys])" % path
    )


def _in_directory(d: Path) -> tuple[list[Path], list[str], dict[str, str]]:
    """A site directory's configs (*.json, *.toml), what was left out of it, and why for what
    cannot be read as a regular file (a FIFO, a device, a socket, a symlink loop): named, never
    opened."""
    take, skip, why = [], [], {}
    try:
        entries = sorted(d.iterdir())
    except OSError as e:
        why = e.strerror or e
        raise ConfigFileError("%s: cannot read the directory (%s)" % (d, why)) from None
    for p in entries:
        if p.name.startswith(".") or p.is_dir():
            continue
        if p.suffix in (".json", ".toml") and not p.name.startswith(RECORD_PREFIX):
            bad = not_regular(p)
            if bad is None:
                take.append(p)
                continue
            why[str(p)] = bad
        skip.append(str(p))
    return take, skip, why


def read_site(args: list[str]) -> Site:
    """The site the arguments name: files and directories, and the keys file the gateway config
    names (as the gateway reads it: by that path, whatever its name). ConfigFileError for
    anything that is no site."""
    paths, site = [], Site([])
    for a in args:
        p = Path(a)
        if p.is_dir():
            taken, skipped, why = _in_directory(p)
            paths += taken
            site.skipped += skipped
            site.left_out.update(why)
            site.directory = True
        else:
            paths.append(p)
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        if _real(p) not in seen:
            seen.add(_real(p))
            unique.append(p)
    # the TOML files first: the gateway config says which file is its keys, whatever its name
    tomls = [_read(p) for p in unique if p.suffix == ".toml"]
    gateways = [f for f in tomls if f.kind == "gateway"]
    if len(gateways) > 1:
        raise ConfigFileError(
            "one gateway config a site: got %s (check each gateway's boards on their own)"
            % ", ".join(str(g.path) for g in gateways)
        )
    named = _keys_path(gateways[0]) if gateways else None
    named_at = _real(named) if named is not None else None
    for p in unique:
        if p.suffix == ".toml":
            site.files.append(next(f for f in tomls if f.path == p))
        else:
            site.files.append(_read(p, "keys" if _real(p) == named_at else None))
    if named is not None and named_at not in seen and not_regular(named) is None:
        site.files.append(_read(named, "keys"))
        site.skipped = [s for s in site.skipped if _real(Path(s)) != named_at]
    if not gateways and len(site.of("keys")) > 1:
        raise ConfigFileError(
            "several keys files and no gateway config to say which one is read: %s"
            % ", ".join(str(k.path) for k in site.of("keys"))
        )
    if not site.of("device"):
        where = " or ".join(str(a) for a in args)
        raise ConfigFileError(
            "%s: no device configs (*.json)%s: give the device configs (or the site directory) "
            "with the gateway config and keys"
            % (where, " in this directory" if site.directory and len(args) == 1 else "")
        )
    return site


def _real(p: Path) -> Path:
    """The file p names, links followed; a symlink loop is its own answer, not a RuntimeError
    (Path.resolve raises one for a loop before Python 3.13)."""
    return Path(os.path.realpath(p))


def _keys_path(gw: SiteFile) -> Path | None:
    name = gw.data["gateway"].get("keys")
    return gw.path.parent / name if isinstance(name, str) else None


# --- the checks ------------------------------------------------------------------------------


def _default(name: str, sub: str | None = None) -> Any:
    """A device-config default, as the schema (and so the board) has it."""
    props = schema()["properties"]
    return (props[name]["properties"][sub] if sub else props[name]).get("default")


def _setting(cfg: dict, name: str, sub: str | None = None) -> Any:
    d = cfg.get(name) if sub else cfg
    if not isinstance(d, dict):
        return _default(name, sub)
    return d.get(sub or name, _default(name, sub))


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_site(site: Site, today: datetime.date | None = None) -> tuple[list[Placed], list[str]]:
    """Every finding of the site, and what could not be checked for want of a file."""
    out: list[Placed] = []

    def add(level: str, rule: str, msg: str, *where: tuple[Any, str]) -> None:
        w = [(str(p), f) for p, f in where]
        out.append(Placed(Finding(level, w[0][1], rule, msg), w))

    devices = site.of("device")
    for d in devices:
        out += [Placed(f, [(str(d.path), f.field)]) for f in check(d.data, today)]
    devices = [d for d in devices if isinstance(d.data, dict)]
    ids = {d.path: d.data.get("device_id") for d in devices}
    ids = {p: i for p, i in ids.items() if isinstance(i, str)}

    # -- unique device ids
    first: dict[str, Path] = {}
    for p, i in ids.items():
        if i in first:
            add(
                "error",
                ID_RULE,
                "%s in both files: the gateway would take the two boards for one" % i,
                (first[i], "device_id"),
                (p, "device_id"),
            )
        else:
            first[i] = p

    # -- the keys: the gateway's keys file (or the one given) and the gateway config
    gw = site.of("gateway")[0] if site.of("gateway") else None
    keys_file = site.of("keys")[0] if site.of("keys") else None
    keys: dict[str, bytes] | None = None
    if gw is not None:  # its keys are the ones it names, whatever else was given
        named, keys_file = _keys_path(gw), None
        for k in site.of("keys"):
            if named is not None and _real(k.path) == _real(named):
                keys_file = k
            else:
                add(
                    "error",
                    GATEWAY_RULE,
                    "the gateway reads its keys from %s, not this file" % named,
                    (gw.path, "gateway.keys"),
                    (k.path, "keys"),
                )
    if keys_file is not None:
        try:
            keys = gwconfig.load_keys(keys_file.path)
        except gwconfig.ConfigError as e:
            add("error", GATEWAY_RULE, e.reason, (keys_file.path, e.field))
    gwcfg = None
    named = _keys_path(gw) if gw is not None else None
    unreadable = not_regular(named) if named is not None and named.exists() else None
    if gw is not None and unreadable is not None:
        # a FIFO or a device (/dev/zero): the gateway would wait on it, or read it forever
        add(
            "error",
            GATEWAY_RULE,
            "the keys file %s is %s: the gateway cannot read its keys from it"
            % (named, unreadable),
            (gw.path, "gateway.keys"),
        )
    elif gw is not None:
        try:
            gwcfg = gwconfig.parse(gw.data, _real(gw.path).parent, files=False)
        except gwconfig.ConfigError as e:
            said = keys_file is not None and keys is None  # the keys file's finding, above
            if not (said and e.field.startswith(("keys", "gateway.keys"))):
                add("error", GATEWAY_RULE, e.reason, (gw.path, e.field))

    if keys is not None:
        assert keys_file is not None
        for d in devices:
            i = ids.get(d.path)
            if i is None:
                continue
            if i not in keys:
                add(
                    "error",
                    KEY_RULE,
                    "%s has no key in %s: the gateway drops every frame it "
                    "sends" % (i, keys_file.path.name),
                    (d.path, "device_id"),
                    (keys_file.path, "keys"),
                )
                continue
            try:
                own = bytes.fromhex(d.data.get("key_hex"))
            except (TypeError, ValueError):
                continue  # no key_hex (it comes with --key at flash), or the schema's finding
            if own != keys[i]:
                add(
                    "error",
                    KEY_RULE,
                    "differs from the gateway's key for %s: the gateway "
                    "rejects every frame this board signs" % i,
                    (d.path, "key_hex"),
                    (keys_file.path, "keys." + i),
                )
        if site.directory:
            for i in sorted(set(keys) - set(ids.values())):
                add(
                    "warning",
                    KEY_RULE,
                    "no device config for %s here: a board no longer on "
                    "site? Its key still lets it talk" % i,
                    (keys_file.path, "keys." + i),
                )

    if gwcfg is not None:
        for d in devices:
            _against_gateway(d, gw.path, gwcfg, add)

    missing = []
    if gw is None:
        missing.append("heartbeat vs offline threshold, link settings (no gateway config given)")
    elif gwcfg is None:  # its keys file unreadable included
        missing.append(
            "heartbeat vs offline threshold, link settings (the gateway config has an error)"
        )
    if keys is None:
        missing.append(
            "device keys (%s)"
            % ("no keys file given" if keys_file is None else "the keys file has an error")
        )
    return out, missing


def _against_gateway(d: SiteFile, gw: Path, g: gwconfig.GatewayConfig, add) -> None:
    """One device config against the gateway's heartbeat, links and site."""
    cfg, p = d.data, d.path
    beat = _setting(cfg, "heartbeat_s")
    if _int(beat) and not g.offline_after_s > MISSED_BEFORE_OFFLINE * beat:
        add(
            "error",
            BEAT_RULE,
            "the board beats every %d s; the gateway calls it offline after "
            "%g s (%g s × %d) of silence, which must exceed %d × %d s = %d s: raise "
            "missed_heartbeats or shorten heartbeat_s"
            % (
                beat,
                g.offline_after_s,
                g.heartbeat_s,
                g.missed_heartbeats,
                MISSED_BEFORE_OFFLINE,
                beat,
                MISSED_BEFORE_OFFLINE * beat,
            ),
            (p, "heartbeat_s"),
            (gw, "gateway.heartbeat_s"),
            (gw, "gateway.missed_heartbeats"),
        )
    kind = _setting(cfg, "link", "kind")
    if kind == "uart":
        baud = _setting(cfg, "link", "baud")
        bauds = sorted({s.baud for s in g.serial})
        if not bauds:
            add(
                "error",
                LINK_RULE,
                "the board talks over a cable (uart); the gateway lists no [[links.serial]] port",
                (p, "link.kind"),
                (gw, "links.serial"),
            )
        elif _int(baud) and baud not in bauds:
            add(
                "error",
                LINK_RULE,
                "the board talks at %d baud; the gateway's serial ports run "
                "at %s: no frame gets through" % (baud, ", ".join(map(str, bauds))),
                (p, "link.baud"),
                (gw, "links.serial"),
            )
    elif kind == "tcp":
        port = _setting(cfg, "link", "port")
        if g.tcp is None:
            add(
                "error",
                LINK_RULE,
                "the board talks over Wi-Fi (tcp); the gateway has no [links.tcp] listener",
                (p, "link.kind"),
                (gw, "links.tcp"),
            )
        elif _int(port) and port != g.tcp.port:
            add(
                "error",
                LINK_RULE,
                "the board connects to port %d; the gateway listens on %d" % (port, g.tcp.port),
                (p, "link.port"),
                (gw, "links.tcp.port"),
            )
    elif kind == "none":
        add(
            "warning",
            LINK_RULE,
            "the board has no link: the gateway never hears from it",
            (p, "link.kind"),
        )
    site = _setting(cfg, "site")
    if isinstance(site, str) and site != g.site:
        add(
            "warning",
            SITE_RULE,
            "the board calls its site %s; the gateway publishes it under "
            "%s (its self-test and commissioning record would say %s)" % (site, g.site, site),
            (p, "site"),
            (gw, "gateway.site"),
        )


# --- the command -----------------------------------------------------------------------------


def main(args: list[str], as_json: bool, today: datetime.date | None) -> int:
    site = read_site(args)  # ConfigFileError: the caller's exit 2
    found, missing = check_site(site, today)
    errors = sum(1 for f in found if f.finding.level == "error")
    if as_json:
        print(
            json.dumps(
                {
                    "files": [{"file": str(f.path), "kind": f.kind} for f in site.files],
                    "skipped": site.skipped,
                    # of those, the ones not even opened: a FIFO, a device, a symlink loop
                    "left_out": [{"file": f, "why": w} for f, w in site.left_out.items()],
                    "not_checked": missing,
                    "errors": errors,
                    "warnings": len(found) - errors,
                    "findings": [f.as_dict() for f in found],
                }
            )
        )
        return 1 if errors else 0
    for f in found:
        print(f)
    for m in missing:
        print("not checked: %s" % m)
    for f, w in site.left_out.items():
        print("left out: %s: %s" % (f, w))
    n = len(site.of("device"))
    parts = ["%d device config%s" % (n, "" if n == 1 else "s")]
    parts += [k for k in ("gateway config", "keys file") if site.of(k.split()[0])]
    print(
        "site %s (%s): %d error(s), %d warning(s)%s"
        % (
            " ".join(args),
            ", ".join(parts),
            errors,
            len(found) - errors,
            "" if errors else " - fit to install",
        )
    )
    return 1 if errors else 0
