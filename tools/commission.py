"""`gasguard commission --port PORT`: the on-device self-test and the commissioning record.

The firmware is stopped from the console (the valve closes), firmware/lib/gasguard/selftest.py
runs on the board: every lamp, the buzzer and the fan in turn, each detector polled for a
plausible clean-air reading, then the valve opened and closed with its position input watched
(only if every detector passed). The installer confirms what only eyes and ears can; the record
goes to Markdown (to hand to the restaurant and the regulator) and JSON (for their systems), and
the board restarts into normal operation with the valve closed until a reset on site.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from gasguard.tools.flash import Board, FlashError, check_supported

SEEN = {
    "red": "the red lamp lit",
    "yellow": "the yellow lamp lit",
    "green": "the green lamp lit",
    "buzzer": "the buzzer sounded",
    "fan": "the exhaust fan ran",
    "valve": "the valve moved",
}


def run_selftest(board: Board, echo) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    partial = b""

    def consume(data: bytes) -> None:
        nonlocal partial
        partial += data
        *lines, partial = partial.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if line.startswith("SELFTEST "):
                r = json.loads(line[9:])
                results.append(r)
                if r["result"] != "info":
                    echo(
                        "  %-12s %-8s %s" % (r["check"], r["result"].upper(), r.get("detail", ""))
                    )

    out, err = board.t.exec_raw(
        "from gasguard import selftest\nselftest.run()\n", timeout=30, data_consumer=consume
    )
    consume(b"\n")
    if err:
        raise FlashError("the self-test stopped on the board: %s" % err.decode().strip()[-400:])
    return results


def confirm(results: list[dict[str, Any]], ask: bool) -> None:
    """Outputs the board can only drive, not sense: a person says what they saw or heard."""
    for r in results:
        if r["result"] != "driven":
            continue
        if not ask:
            r["confirmed"] = None
            continue
        answer = input("  Did you see that %s? [y/n] " % SEEN.get(r["check"], r["check"]))
        r["confirmed"] = answer.strip().lower().startswith("y")
        if not r["confirmed"]:
            r["result"] = "fail"
            r["detail"] = "the installer did not see or hear it"


def verdict(results: list[dict[str, Any]]) -> str:
    checks = [r for r in results if r["result"] != "info"]
    if any(r["result"] in ("fail", "skipped") for r in checks):
        return "FAIL"
    if any(r["result"] == "driven" and r.get("confirmed") is not True for r in checks):
        return "PASS (outputs driven; confirmation by eye pending)"
    return "PASS"


def record(
    results: list[dict[str, Any]],
    board_info: dict[str, Any],
    installer: str | None,
    install: dict[str, Any] | None,
    when: datetime.datetime,
) -> dict[str, Any]:
    about = next((r for r in results if r["check"] == "about"), {})
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
        "checks": [r for r in results if r["result"] != "info"],
        "verdict": verdict(results),
    }


def markdown(rec: dict[str, Any]) -> str:
    lines = [
        "# GasGuard commissioning record",
        "",
        "| | |",
        "|---|---|",
        "| Site | %s |" % rec["site"],
        "| Device | %s |" % rec["device"],
        "| Date | %s |" % rec["date"],
        "| Firmware | GasGuard %s on MicroPython %s (%s) |"
        % (rec["firmware"], rec["micropython"], rec["platform"]),
        "| Config digest | `%s` |" % rec["config_digest"],
        "| Installer | %s |" % (rec["installer"] or ""),
        "| **Verdict** | **%s** |" % rec["verdict"],
        "",
        "## Self-test",
        "",
        "| Check | Result | Detail | Confirmed by the installer |",
        "|---|---|---|---|",
    ]
    for c in rec["checks"]:
        conf = "n/a"
        if "confirmed" in c:
            conf = {True: "yes", False: "NO", None: "pending"}[c["confirmed"]]
        lines.append(
            "| %s | %s | %s | %s |" % (c["check"], c["result"], c.get("detail", ""), conf)
        )
    inst = rec.get("install")
    if inst:
        lines += [
            "",
            "## Installation",
            "",
            "Ceiling %s m; backup power: %s; valve installed %s."
            % (
                inst.get("ceiling_m", "?"),
                "yes" if inst.get("backup_power") else "no",
                inst.get("valve_installed", "?"),
            ),
            "",
            "| Detector | Location | Height (m) | Distance (m) | Installed |",
            "|---|---|---|---|---|",
        ]
        for d in inst.get("detectors", []):
            lines.append(
                "| %s | %s | %s | %s | %s |"
                % (
                    d.get("address"),
                    d.get("location", ""),
                    d.get("mount_height_m", ""),
                    d.get("distance_m", ""),
                    d.get("installed", ""),
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
    if config is not None:
        try:
            install = json.loads(config.read_text()).get("install")
        except (OSError, ValueError) as e:
            raise FlashError("%s: cannot read the install record (%s)" % (config, e), 2) from None
    board = Board(port)
    restarted = False
    try:
        info = board.identify()
        check_supported(info)
        echo("self-test on %s (the safety loop is stopped; the valve is closed)" % port)
        results = run_selftest(board, echo)
        if not any(r["check"] == "end" for r in results):
            raise FlashError("the self-test did not finish: %s" % results[-1:])
        board.restart(info["platform"])
        restarted = True
    finally:
        if not restarted:
            board.close()
    confirm(results, ask)
    now = datetime.datetime.now().astimezone()
    rec = record(results, info, installer, install, now)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "commissioning-%s-%s" % (rec["device"], now.strftime("%Y%m%d-%H%M"))
    md, js = out_dir / (stem + ".md"), out_dir / (stem + ".json")
    md.write_text(markdown(rec))
    js.write_text(json.dumps(rec, indent=2))
    return rec, md, js


def main(args: Any) -> int:
    try:
        rec, md, js = commission(
            args.port,
            Path(args.out),
            args.installer,
            Path(args.config) if args.config else None,
            ask=not args.yes and sys.stdin.isatty(),
        )
    except FlashError as e:
        print("gasguard commission: %s" % e, file=sys.stderr)
        return e.code
    print("verdict: %s" % rec["verdict"])
    print("record: %s and %s" % (md, js))
    print("the board restarted: the valve stays closed until staff reset it on site")
    return 1 if rec["verdict"] == "FAIL" else 0


def add_parser(sub: Any) -> None:
    c = sub.add_parser("commission", help="run the on-device self-test, write the record")
    c.add_argument("--port", required=True, help="serial port or a vboard REPL pty")
    c.add_argument("--config", help="the device config (JSON) whose install block to record")
    c.add_argument("--installer", help="name (and licence number) of the installer")
    c.add_argument("--out", default=".", help="directory for the record (default: here)")
    c.add_argument(
        "--yes", action="store_true", help="do not ask what was seen (left pending in the record)"
    )
