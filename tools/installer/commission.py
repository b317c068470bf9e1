"""`gasguard commission --port PORT`: the on-device self-test and the commissioning record.

The firmware is stopped from the console (the valve closes), firmware/lib/gasguard/selftest.py
runs on the board: every lamp, the buzzer and the fan in turn, each detector polled for a
plausible clean-air reading, then the valve opened and closed with its position input watched
(only if every detector passed). The installer confirms what only eyes and ears can; without a
terminal to ask on (and without --yes) those checks are "not confirmed" and the verdict says so,
never PASS. An install-rule override that `gasguard flash --override` left on the board goes
into the record. The record goes to Markdown (to hand to the restaurant and the regulator) and
JSON (for their systems), and the board restarts into normal operation with the valve closed
until a reset on site, whatever happened on the way (a failed self-test included).

The record needs both --installer and --config (a legal record names who and what was
installed): without either it is refused (exit 2), never asked for, so that a script gets the
same answer as a person. The port is identified first (tools/installer/port.py): the link UART
or another device is refused in a second (exit 2), silence or a busy port is exit 3. Each run
writes its own record: commissioning-<device>-<local date and time>[-N].md and .json.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from gasguard.tools import exitcodes, human
from gasguard.tools.installer import port as ports
from gasguard.tools.installer.flash import OVERRIDE_FILE, Board, FlashError, check_supported

NOT_CONFIRMED = "not confirmed"
NO_INSTALL = "no install record: placement not checked"
# what Markdown reads as markup in a table cell: shown as written, backslash-escaped
MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~])")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# the board reports each result as a number (selftest.py keeps its interned names to a minimum)
RESULTS = ("info", "pass", "fail", "driven", "skipped")
IMPORT_TRIES = 3  # the stopped firmware's heap can be too fragmented for the first import
SEEN = {
    "red": "the red lamp lit",
    "yellow": "the yellow lamp lit",
    "green": "the green lamp lit",
    "buzzer": "the buzzer sounded",
    "fan": "the exhaust fan ran",
    "valve": "the valve moved",
}


def _load_selftest(board: Board) -> None:
    """Import the self-test on the board. After the stop the heap is fragmented, and a new
    interned name can need a large block at once (the names' pool grows by doubling): selftest.py
    adds none but its own module and file names, and should the heap still be short, a failed
    try frees what it took and a collection and another try have found room."""
    from mpremote.transport import TransportError

    for attempt in range(IMPORT_TRIES):
        try:
            board.t.exec("import gc\ngc.collect()\nfrom gasguard import selftest\n")
            return
        except TransportError as e:
            if "MemoryError" not in str(e) or attempt == IMPORT_TRIES - 1:
                raise FlashError(
                    "the self-test could not be loaded on the board: %s" % str(e).strip()[-300:]
                ) from None


def config_digests(raw: bytes, cfg: Any) -> list[str]:
    """The digests the firmware reports (sha256 of its config.json's bytes, 16 hex digits) for
    a board that runs this installer's file: as `gasguard flash` writes it (without the install
    block and the key: the one that counts, first), as a virtual board writes it (the key
    taken out only), and the file's own bytes (copied to the board as it is)."""
    digest = lambda b: hashlib.sha256(b).hexdigest()[:16]  # noqa: E731
    out = []
    if isinstance(cfg, dict):
        for drop in (("key_hex", "install"), ("key_hex",)):
            out.append(digest(json.dumps({k: v for k, v in cfg.items() if k not in drop},
                                         indent=1).encode()))  # fmt: skip
    return out + [digest(raw)]


def running_config(board: Board) -> tuple[str, str] | None:
    """(device id, config digest) of the config the stopped firmware runs, or None if it never
    got as far as running one. (Only names the board has interned already: see _load_selftest.)"""
    text = board.t.exec(
        "import gasguard, json\n"
        "print(json.dumps([gasguard.stopped[1].device_id, gasguard.stopped[1].digest_hex()]) "
        "if getattr(gasguard, 'stopped', None) else 0)\n"
    ).decode()
    try:
        got = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return (str(got[0]), str(got[1])) if isinstance(got, list) and len(got) == 2 else None


def check_board_runs(config: Path, raw: bytes, cfg: Any, running: tuple[str, str] | None) -> None:
    """Refuse (exit 2) a record that would put this file's install details against a board that
    runs another device's config, or another config of the same device."""
    if running is None:
        raise FlashError(
            "the board runs no GasGuard config (its firmware stopped at boot: see its console): "
            "flash it with %s first" % config
        )
    device, digest = running
    want = cfg.get("device_id") if isinstance(cfg, dict) else None
    if device != want:
        whose = "no device's (no device_id)"
        if isinstance(want, str):
            whose = "the config of %s" % want
        raise FlashError(
            "this board is %s; %s is %s: its install details would be recorded against the "
            "wrong board. Give this board's config, or commission the board %s is for"
            % (device, config, whose, config),
            exitcodes.BAD_INPUT,
        )
    if digest not in config_digests(raw, cfg):
        raise FlashError(
            "%s is not the config this board runs (the board's config digest is %s; this file's "
            "is %s): flash this config first (gasguard flash --config %s), or give the config "
            "the board was flashed with" % (config, digest, config_digests(raw, cfg)[0], config),
            exitcodes.BAD_INPUT,
        )


def check_name(check: str, place: int | None = None) -> str:
    """A check as people read it; the board names a detector "detector.ADDRESS" and reports the
    detectors in its config's order (place)."""
    if check.startswith("detector."):
        return human.detector(place, int(check.split(".", 1)[1]))
    return check


def run_selftest(board: Board, echo) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    partial = b""
    detectors = 0

    def consume(data: bytes) -> None:
        nonlocal partial, detectors
        partial += data
        *lines, partial = partial.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if line.startswith("SELFTEST "):
                r = json.loads(line[9:])
                if isinstance(r.get("result"), int):
                    r["result"] = RESULTS[r["result"]]
                if str(r.get("check")).startswith("detector."):
                    r["name"] = check_name(r["check"], detectors)
                    detectors += 1
                results.append(r)
                if r["result"] != "info":
                    echo(
                        "  %-31s %-8s %s"
                        % (r.get("name", r["check"]), r["result"].upper(), r.get("detail", ""))
                    )

    _load_selftest(board)
    out, err = board.t.exec_raw("selftest.run()\n", timeout=30, data_consumer=consume)
    consume(b"\n")
    if err:
        raise FlashError("the self-test stopped on the board: %s" % err.decode().strip()[-400:])
    return results


def read_override(board: Board) -> dict[str, Any] | None:
    """The install-rule override `gasguard flash --override` left on the board, if any. (Only
    names the board has interned already: see _load_selftest.)"""
    text = board.t.exec(
        "try:\n    print(open(%r).read())\nexcept OSError:\n    print(0)\n"
        % board.install_file(OVERRIDE_FILE)
    ).decode()
    if text.strip() == "0":
        return None
    try:
        rec = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return rec if isinstance(rec, dict) else {"unreadable": text[:200]}


def confirm(results: list[dict[str, Any]], ask: bool) -> None:
    """Outputs the board can only drive, not sense: a person says what they saw or heard. With
    nobody to ask they stay "not confirmed", which is never a pass."""
    for r in results:
        if r["result"] != "driven":
            continue
        if not ask:
            r["result"] = NOT_CONFIRMED
            r["confirmed"] = None
            continue
        answer = input("  Did you see that %s? [y/n] " % SEEN.get(r["check"], r["check"]))
        r["confirmed"] = answer.strip().lower().startswith("y")
        if r["confirmed"]:
            r["result"] = "pass"
        else:
            r["result"] = "fail"
            r["detail"] = "the installer did not see or hear it"


def verdict(results: list[dict[str, Any]]) -> str:
    checks = [r for r in results if r["result"] != "info"]
    if any(r["result"] in ("fail", "skipped") for r in checks):
        return "FAIL"
    unseen = [r["check"] for r in checks if r["result"] in (NOT_CONFIRMED, "driven")]
    if unseen:
        return "NOT CONFIRMED: nobody confirmed %s (run it at a terminal to be asked)" % (
            ", ".join(unseen)
        )
    return "PASS"


def record(
    results: list[dict[str, Any]],
    board_info: dict[str, Any],
    installer: str | None,
    install: dict[str, Any] | None,
    when: datetime.datetime,
    override: dict[str, Any] | None = None,
) -> dict[str, Any]:
    about = next((r for r in results if r["check"] == "about"), {})
    if override is not None and "config_digest" in override:
        # made for the config the board runs, or for an earlier one
        override = dict(override, current=override["config_digest"] == about.get("cfg"))
    return {
        "record": "gasguard commissioning",
        "date": when.isoformat(timespec="seconds"),
        "site": about.get("site"),
        "device": about.get("device"),
        "firmware": about.get("fw"),
        "config_digest": about.get("cfg"),
        "micropython": ".".join(str(x) for x in board_info.get("version", [])),
        "platform": board_info.get("platform"),
        "installer": installer,
        "install": install,
        "install_rules_overridden": override,
        "checks": [r for r in results if r["result"] != "info"],
        "verdict": verdict(results),
        # what the record lacks that an inspector looks for (the self-test's verdict aside)
        "warnings": [] if isinstance(install, dict) else [NO_INSTALL],
    }


def cell(value: Any) -> str:
    """A value as Markdown shows it written: control characters as spaces, and every character
    Markdown reads as markup ('|' that splits a table cell, '#', '*', ...) backslash-escaped.
    Whatever came from the installer, the config or the board, it is never markup."""
    return MARKDOWN.sub(r"\\\1", CONTROL.sub(" ", human.figure(value)))


def markdown(rec: dict[str, Any]) -> str:
    lines = [
        "# GasGuard commissioning record",
        "",
        "| | |",
        "|---|---|",
        "| Site | %s |" % cell(rec["site"]),
        "| Device | %s |" % cell(rec["device"]),
        "| Date | %s |" % cell(human.local_time(rec["date"])),
        "| Firmware | GasGuard %s on MicroPython %s (%s) |"
        % tuple(cell(rec[k]) for k in ("firmware", "micropython", "platform")),
        "| Config digest | `%s` |" % human.figure(rec["config_digest"]).replace("`", "'"),
        "| Installer | %s |" % cell(rec["installer"]),
        "| **Verdict** | **%s** |" % cell(rec["verdict"]),
    ]
    ov = rec.get("install_rules_overridden")
    if ov:
        lines.append(
            "| **Install rules** | **OVERRIDDEN** by %s on %s: %s%s |"
            % (cell(ov.get("by")), cell(ov.get("date")), cell(ov.get("reason")),
               "" if ov.get("current", True) else " (made for an earlier config)")
        )  # fmt: skip
    for w in rec.get("warnings") or []:
        lines += ["", "**WARNING: %s**" % cell(w)]
    lines += [
        "",
        "## Self-test",
        "",
        "| Check | Result | Detail | Confirmed by the installer |",
        "|---|---|---|---|",
    ]
    for c in rec["checks"]:
        conf = "n/a"
        if "confirmed" in c:
            conf = {True: "yes", False: "NO", None: "NOT CONFIRMED"}.get(c["confirmed"], "?")
        lines.append(
            "| %s | %s | %s | %s |"
            % (cell(c.get("name", c["check"])), cell(c["result"]), cell(c.get("detail", "")),
               conf)
        )  # fmt: skip
    if ov:
        lines += [
            "",
            "## Install rules overridden at flashing",
            "",
            "| Field | Rule | Finding |",
            "|---|---|---|",
        ]
        for f in ov.get("overridden", []):
            if isinstance(f, dict):
                lines.append(
                    "| %s | %s | %s |"
                    % (cell(f.get("field")), cell(f.get("rule")), cell(f.get("message")))
                )
    inst = rec.get("install")
    if isinstance(inst, dict):
        lines += [
            "",
            "## Installation",
            "",
            "Ceiling %s m; backup power: %s; valve installed %s."
            % (
                cell(inst.get("ceiling_m", "?")),
                "yes" if inst.get("backup_power") else "no",
                cell(inst.get("valve_installed", "?")),
            ),
            "",
            "| Detector | Location | Height (m) | Distance (m) | Installed |",
            "|---|---|---|---|---|",
        ]
        for d in inst.get("detectors") or []:
            if not isinstance(d, dict):
                continue
            lines.append(
                "| %s | %s | %s | %s | %s |"
                % (
                    cell(d.get("name", d.get("address"))),
                    cell(d.get("location", "")),
                    cell(d.get("mount_height_m", "")),
                    cell(d.get("distance_m", "")),
                    cell(d.get("installed", "")),
                )
            )
    lines += [
        "",
        "The valve stays closed after commissioning until staff reset it on site.",
        "",
        "Installer's signature: ____________________   Restaurant's signature: "
        "____________________",
        "",
    ]
    return "\n".join(lines)


def commission(
    port: str,
    out_dir: Path,
    installer: str | None = None,
    config: Path | None = None,
    ask: bool = False,
    echo=print,
) -> tuple[dict[str, Any], Path, Path]:
    install = None
    raw, cfg = b"", None
    if config is not None:
        from gasguard.tools.installer.configcheck import ConfigFileError, read_file

        try:
            raw, cfg = read_file(config)
        except ConfigFileError as e:
            raise FlashError("%s: cannot read the install record (%s)" % (config, e), 2) from None
        install = cfg.get("install") if isinstance(cfg, dict) else None
        if isinstance(install, dict) and isinstance(install.get("detectors"), list):
            install = dict(install, detectors=[
                dict(d, name=human.detector_in(cfg, d.get("address"))) if isinstance(d, dict)
                else d for d in install["detectors"]])  # fmt: skip
    # the link UART or a silent port is named in a second, before mpremote waits on it
    found = ports.identify(port)
    if found.kind != ports.REPL:
        raise FlashError(found.message, found.code)
    try:
        board = Board(port)  # from here the firmware is stopped: it is restarted whatever happens
    except FlashError as e:  # the port opened a moment ago: the REPL went away, or never came
        raise FlashError(str(e), exitcodes.UNREACHABLE) from None
    info: dict[str, Any] = {}
    try:
        info = board.identify()
        check_supported(info)
        if config is not None:  # before any step: the record must be this board's
            check_board_runs(config, raw, cfg, running_config(board))
        echo("self-test on %s (the safety loop is stopped; the valve is closed)" % port)
        results = run_selftest(board, echo)
        if not any(r["check"] == "end" for r in results):
            raise FlashError("the self-test did not finish: %s" % results[-1:])
        override = read_override(board)
    except OSError as e:  # the cable pulled, the board unpowered (pyserial's errors are OSErrors)
        # the restart (below) cannot reach it either: its firmware is likely still stopped
        raise FlashError(
            "the board went away during the self-test (%s): no record was written. Its "
            "firmware may be stopped (no gas detection; the green lamp off): reset or "
            "power-cycle the board, reconnect it and run the same command again"
            % (str(e).strip() or type(e).__name__),
            exitcodes.UNREACHABLE,
        ) from None
    finally:
        try:
            board.restart(info.get("platform", "esp32"))
        except Exception:  # noqa: BLE001 - a board that cannot be restarted from here is closed
            try:
                board.close()
            except Exception:  # noqa: BLE001
                pass
    confirm(results, ask)
    now = datetime.datetime.now().astimezone()
    rec = record(results, info, installer, install, now, override)
    try:
        md, js = write_record(out_dir, rec, now)
    except OSError as e:  # checked before the self-test (check_out); the disk filled since?
        raise FlashError(
            "the self-test ran (verdict: %s) but the record could not be written to %s (%s)"
            % (rec["verdict"], out_dir, e.strerror or e)
        ) from None
    return rec, md, js


def write_record(out_dir: Path, rec: dict[str, Any], when: datetime.datetime) -> tuple[Path, Path]:
    """commissioning-<device>-<local date-time>[-N].md and .json, never over an earlier record:
    the .json is created exclusively, so two runs in the same second get -2, -3, ..."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "commissioning-%s-%s" % (rec["device"], when.strftime("%Y%m%d-%H%M%S"))
    for n in range(1, 1000):
        name = stem if n == 1 else "%s-%d" % (stem, n)
        js, md = out_dir / (name + ".json"), out_dir / (name + ".md")
        try:
            with open(js, "x") as f:
                f.write(json.dumps(rec, indent=2))
        except FileExistsError:
            continue
        md.write_text(markdown(rec))
        return md, js
    raise FlashError("%s: 999 records for %s this second" % (out_dir, stem), 2)


def missing(args: Any) -> list[str]:
    """What the record cannot be made without, in words."""
    out = []
    if not (args.installer or "").strip():
        out.append("--installer NAME (who commissions: name and licence number)")
    if not args.config:
        out.append("--config FILE (the device config: its install block goes into the record)")
    return out


def bad_installer(name: str) -> str | None:
    """Why --installer cannot go into a legal record as it is, or None."""
    if CONTROL.search(name):
        return (
            "--installer %r has a control character (a newline, a tab, an escape): give the "
            "name and licence number on one line" % name
        )
    return None


def check_out(out: Path) -> None:
    """--out must be a directory the record can be written to: said before the self-test (which
    cycles the valve), never after it as a traceback. Creates it if it does not exist."""
    if out.exists() and not out.is_dir():
        raise FlashError(
            "--out %s is a file, not a directory: give the directory the record goes to (each "
            "run writes a new commissioning-<device>-<date>.md and .json there)" % out,
            exitcodes.BAD_INPUT,
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise FlashError(
            "--out %s: the record cannot be written there (%s)" % (out, e.strerror or e),
            exitcodes.BAD_INPUT,
        ) from None


def main(args: Any) -> int:
    lacking = missing(args)
    if lacking:
        print("gasguard commission: the record needs %s" % " and ".join(lacking), file=sys.stderr)
        return exitcodes.BAD_INPUT
    bad = bad_installer(args.installer)
    if bad:
        print("gasguard commission: %s" % bad, file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        check_out(Path(args.out))
    except FlashError as e:
        print("gasguard commission: %s" % e, file=sys.stderr)
        return e.code
    ask = not args.yes and sys.stdin.isatty()
    if not args.yes and not ask:
        print(
            "gasguard commission: no terminal to ask on: the lamps, buzzer and fan will be "
            "recorded as not confirmed (run it at a terminal, or --yes to accept that)",
            file=sys.stderr,
        )
    try:
        rec, md, js = commission(
            args.port,
            Path(args.out),
            args.installer,
            Path(args.config) if args.config else None,
            ask=ask,
        )
    except FlashError as e:
        print("gasguard commission: %s" % e, file=sys.stderr)
        if e.code == exitcodes.FAILED:  # the board was reached and stopped: it was restarted
            print("the board was restarted: the valve stays closed until staff reset it on site",
                  file=sys.stderr)  # fmt: skip
        return e.code
    print("verdict: %s" % rec["verdict"])
    if rec.get("install_rules_overridden"):
        print("install rules overridden at flashing: see the record")
    print("record: %s and %s" % (md, js))
    print("the board restarted: the valve stays closed until staff reset it on site")
    for w in rec["warnings"]:
        print(
            "gasguard commission: WARNING: %s (%s has no install block: where each detector is "
            "mounted is not on record; add it and commission again)" % (w, args.config),
            file=sys.stderr,
        )
    if rec["warnings"]:
        return exitcodes.FAILED  # a record an inspector cannot accept as it is
    if rec["verdict"] == "PASS" or (args.yes and rec["verdict"].startswith("NOT CONFIRMED")):
        return 0  # --yes: the installer chose a record with unconfirmed outputs
    return 1


def register(sub: Any) -> None:
    c = sub.add_parser(
        "commission",
        help="run the on-device self-test, write the record",
        epilog="here:\n"
        "  1  the verdict is not PASS (with --yes, NOT CONFIRMED is 0), or the config has no\n"
        "     install block (no install record: placement not checked)\n"
        "  2  --installer or --config missing, --installer with a control character, --out not\n"
        "     a writable directory, the port is the board's link UART (or another device),\n"
        "     not its USB REPL, or the board runs another config than --config (another\n"
        "     device, or a config changed since the flash)\n"
        "  3  nothing answers on the port, or another program holds it",
    )
    c.add_argument("--port", required=True, help="the board's USB serial port, or a vboard REPL")
    c.add_argument("--config", help="the device config (JSON) whose install block to record "
                   "(required)")  # fmt: skip
    c.add_argument("--installer", help="name and licence number of the installer (required)")
    c.add_argument("--out", default=".", help="directory for the record (default: here)")
    c.add_argument(
        "--yes",
        action="store_true",
        help="do not ask what was seen: recorded as not confirmed (the verdict says so), exit 0",
    )
    c.set_defaults(run=main)
