"""`gasguard commission --port PORT`: the on-site acceptance test and its signed record (issue 26).

The firmware is stopped from the console (the valve closes); then, on the board:
  1. each lamp, the buzzer and the fan is switched on by itself, and the installer is asked
     whether they saw or heard it WHILE it is on (it goes off once answered); with nobody to
     ask (no terminal, or --yes) it is on for a moment and recorded "not confirmed", never pass;
  2. firmware/lib/gasguard/selftest.py polls each detector for a clean-air reading, then opens
     and closes the valve against its position input (only if every detector passed);
  3. the bump test, detector by detector (tools/installer/bumptest.py): test gas must take the
     reading past the low and high set points, sound the alarm and close the valve (the time
     from the high set point to the position input showing closed is measured on the board);
     RESET must be refused while gas is present and reopen the valve once it has cleared. A
     person applies the gas, guided step by step; on a virtual board (--virtual) the detector
     simulator does.
The record (tools/installer/commrecord.py: unit, installer, equipment, install geometry and the
install rules' findings, set points, every check with its time, the bump tests, the head of
the board's event log) is signed with the installer's Ed25519 key (`gasguard installer keygen`,
protocol/record.py) and written as JSON, bilingual HTML and PDF under a name no other record
has. The board restarts into normal operation with the valve closed until a reset on site,
whatever happened on the way.

Refused (exit 2) before the board is touched: no --installer identity or --config, an identity
or key that cannot sign (damaged, another installer's key), --out that cannot take the record,
a --virtual file that names no virtual board of this device. The port is identified first
(tools/installer/port.py): the link UART or another device is refused in a second (exit 2),
silence or a busy port is exit 3. Before any step, a board that runs another config than
--config is refused (exit 2).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gasguard.protocol import cbor
from gasguard.protocol import record as signed
from gasguard.tools import exitcodes, human
from gasguard.tools.installer import bumptest, commrecord, identity
from gasguard.tools.installer import port as ports
from gasguard.tools.installer.flash import OVERRIDE_FILE, Board, FlashError, check_supported

NOT_CONFIRMED = commrecord.NOT_CONFIRMED
# the board reports each result as a number (selftest.py keeps its interned names to a minimum)
RESULTS = ("info", "pass", "fail", "driven", "skipped")
IMPORT_TRIES = 3  # the stopped firmware's heap can be too fragmented for the first import
OUTPUTS = ("red", "yellow", "green", "buzzer", "fan")
SHOWN_S = 0.7  # an output's time on when nobody is asked: long enough to be seen
SEEN = {
    "red": "红灯亮了吗 Is the red lamp lit",
    "yellow": "黄灯亮了吗 Is the yellow lamp lit",
    "green": "绿灯亮了吗 Is the green lamp lit",
    "buzzer": "蜂鸣器响了吗 Is the buzzer sounding",
    "fan": "排风扇在转吗 Is the exhaust fan running",
    "valve": "阀门动作了吗 Did the valve move",
}
# on the board, with only names the firmware has interned (see _load_selftest)
_SWITCH = ("import gasguard\nfrom time import ticks_ms\nboard = gasguard.stopped[0]\n"
           "board.%s.value(%d)\nboard.service(ticks_ms())\n")  # fmt: skip
_LOG_LIST = ("import gasguard, os\nboard = gasguard.stopped[0]\n"
             "print(board.root)\nprint(os.listdir(board.root + '/log'))\n")  # fmt: skip
# sha256 of each file, in names the stopped firmware has interned ("-" for a missing file)
_HASH = ("import hashlib\nb = bytearray(256)\nfor p in %r:\n    try:\n        f = open(p, 'rb')\n"
         "    except OSError:\n        print('-', p)\n        continue\n"
         "    h = hashlib.sha256()\n    while True:\n        n = f.readinto(b)\n"
         "        if not n:\n            break\n        h.update(b if n == 256 else b[:n])\n"
         "    f.close()\n    print(h.digest().hex(), p)\n")  # fmt: skip
_LOG_READ = ("f = open(%r, 'rb')\nwhile True:\n    b = f.read(192)\n    if not b:\n        break\n"
             "    print(b.hex())\nf.close()\n")  # fmt: skip


utc_now = bumptest.utc_now


def _load_selftest(board: Board, code: str = "from gasguard import selftest\n") -> None:
    """Import the self-test (or the bump test) on the board. After the stop the heap is
    fragmented, and a new interned name can need a large block at once (the names' pool grows
    by doubling): selftest.py adds none but its own module and file names, and should the heap
    still be short, a failed try frees what it took and a collection and another try have found
    room."""
    from mpremote.transport import TransportError

    for attempt in range(IMPORT_TRIES):
        try:
            board.t.exec("import gc\ngc.collect()\n" + code)
            return
        except TransportError as e:
            if "MemoryError" not in str(e) or attempt == IMPORT_TRIES - 1:
                raise FlashError(
                    "the self-test could not be loaded on the board: %s" % str(e).strip()[-300:]
                ) from None


# a test module out before the next one comes in: the stopped heap holds one at a time
_UNLOAD = ("import sys, gc, gasguard\nsys.modules.pop('gasguard.%s', None)\n"
           "if '%s' in gasguard.__dict__:\n    delattr(gasguard, '%s')\n"
           "if '%s' in globals():\n    del %s\ngc.collect()\n")  # fmt: skip
_BUMP = _UNLOAD % (("selftest",) * 5) + "from gasguard import bump\n"


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


def selftest_line(text: str) -> dict[str, Any]:
    """A self-test line ("SELFTEST {...}") as the record keeps it, its result named. A line
    damaged on its way (a byte lost on the USB cable) is a failed check saying so: it raised in
    the REPL reader, or put an infinite reading or a number past 2^53 into the record, whose
    signing then failed after the test."""
    try:
        r = json.loads(text[9:])
        ok = isinstance(r, dict) and isinstance(r.get("check"), str) and r.get("result") in (
            range(len(RESULTS)))  # fmt: skip
        ok = ok and all(isinstance(r[k], str) for k in ("detail", "device", "site", "fw", "cfg")
                        if k in r)  # fmt: skip
        ok = ok and all(type(r[k]) is int and 0 <= r[k] < bumptest.LIMIT
                        for k in ("open_ms", "close_ms") if k in r)  # fmt: skip
        lel = r.get("lel", 0) if ok else None
        ok = ok and type(lel) in (int, float) and abs(lel) < 1e6  # NaN is not below anything
        if ok and r["check"].startswith("detector."):
            ok = r["check"][9:].isdigit() and len(r["check"]) < 16
    except ValueError:
        ok = False
    if not ok:
        r = {"check": "damaged", "result": 2, "detail": "a line from the board was damaged on "
             "its way (the USB cable?): %r" % text[9:89]}  # fmt: skip
    return dict(r, result=RESULTS[r["result"]])


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
                r = selftest_line(line)
                r["at"] = utc_now()
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


def switch(board: Board, name: str, on: int) -> None:
    board.t.exec(_SWITCH % (name, on))


def outputs(board: Board, ask, echo) -> list[dict[str, Any]]:
    """Each lamp, the buzzer and the fan on by itself; the person answers while it is on.
    ask(question) -> bool, or None: nobody to ask (each is then "not confirmed")."""
    for name in OUTPUTS:
        switch(board, name, 0)
    time.sleep(0.3)
    out = []
    for name in OUTPUTS:
        switch(board, name, 1)
        try:
            if ask is None:
                time.sleep(SHOWN_S)
                seen = None
            else:
                seen = bool(ask("  %s? [y/n] " % SEEN[name]))
        finally:
            switch(board, name, 0)
        c = {"check": name, "name": name, "at": utc_now(), "confirmed": seen,
             "result": {True: "pass", False: "fail", None: NOT_CONFIRMED}[seen],
             "detail": {True: "seen or heard by the installer while on",
                        False: "the installer did not see or hear it while it was on",
                        None: "on for %.1f s; nobody was asked" % SHOWN_S}[seen]}  # fmt: skip
        echo("  %-31s %-8s %s" % (name, c["result"].upper(), c["detail"]))
        out.append(c)
    return out


def as_check(r: dict[str, Any], ask) -> dict[str, Any]:
    """A self-test line as the record keeps it: integers and strings only."""
    c: dict[str, Any] = {"check": str(r["check"]), "name": str(r.get("name", r["check"])),
                         "result": r["result"], "at": r.get("at"),
                         "detail": str(r.get("detail", ""))}  # fmt: skip
    for k in ("open_ms", "close_ms"):
        if isinstance(r.get(k), int):
            c[k] = r[k]
    if isinstance(r.get("lel"), int | float):
        c["tenths"] = int(round(r["lel"] * 10))
    if c["result"] == "driven":  # a valve without a position input: only eyes can tell
        seen = None if ask is None else bool(ask("  %s? [y/n] " % SEEN["valve"]))
        c["confirmed"] = seen
        c["result"] = {True: "pass", False: "fail", None: NOT_CONFIRMED}[seen]
    return c


def log_head(board: Board) -> tuple[int, str] | None:
    """(index, digest) of the newest record of the board's event log: its hash chain's head
    (firmware/lib/gasguard/eventlog.py: sha256 of the record's payload, first 8 bytes). The
    record names it, so the record and the board's history vouch for each other."""
    text = board.t.exec(_LOG_LIST).decode().strip().splitlines()
    if len(text) < 2:
        return None
    root = text[-2]
    try:
        names = json.loads(text[-1].replace("'", '"'))
    except ValueError:
        return None
    segs = sorted(n for n in names if isinstance(n, str) and n.endswith(".seg") and len(n) == 12
                  and n[:8].isdigit())  # fmt: skip
    if not segs:
        return None
    hexed = board.t.exec(_LOG_READ % ("%s/log/%s" % (root, segs[-1]))).decode()
    data = bytes.fromhex("".join(hexed.split()))
    head, pos = None, 0
    while pos + 2 <= len(data):  # u16 length | payload | u32 CRC: the intact records only
        n = int.from_bytes(data[pos:pos + 2], "big")
        payload = data[pos + 2:pos + 2 + n]
        if n == 0 or len(payload) < n or pos + 6 + n > len(data):
            break
        try:
            index = cbor.loads(payload)["n"]
        except (ValueError, KeyError, TypeError, IndexError):
            break
        if type(index) is not int or not 0 <= index <= signed.INT_MAX:
            break  # not a record's index (a damaged record): int("x") raised here
        head = (index, hashlib.sha256(payload).digest()[:8].hex())
        pos += 6 + n
    return head


def firmware_digest(board: Board) -> str | None:
    """sha256 over the firmware files the board runs ("<sha256> <path>" lines, sorted): which
    firmware was commissioned, beyond its version string. None if it cannot be read (the
    record then says so: "—")."""
    from gasguard.tools.installer.flash import ROOT_INSTALL, install_dir, root_files

    try:
        with tempfile.TemporaryDirectory(prefix="gasguard-fw-") as tmp:
            from gasguard.tools.image import install_firmware

            install_firmware(Path(tmp))
            files = sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob("*")
                           if p.is_file())  # fmt: skip
        names = board.installs()
        cur = install_dir(names[0] if names else ROOT_INSTALL)
        at_root = root_files()
        paths = [p if p in at_root else cur + p for p in files]
        got: dict[str, str] = {}
        for i in range(0, len(paths), 4):  # small pieces of code: the heap is in pieces too
            for line in board.t.exec(_HASH % (paths[i:i + 4],)).decode().splitlines():
                digest, _, path = line.strip().partition(" ")
                if path in paths:
                    got[path] = digest
    except Exception:  # noqa: BLE001 - the record says "unknown" rather than fail the test
        return None
    lines = "".join("%s %s\n" % (got.get(p) or "-", p) for p in sorted(paths))
    return hashlib.sha256(lines.encode()).hexdigest()


def commission(
    port: str,
    out_dir: Path,
    installer: dict[str, Any],
    key: Any,
    config: Path,
    ask=None,
    echo=print,
    virtual: bumptest.Virtual | None = None,
    pdf: bool = True,
    bump: bool = True,
) -> tuple[dict[str, Any], dict[str, Path], str | None]:
    from mpremote.transport import TransportError

    from gasguard.tools.installer.configcheck import ConfigFileError, check_file

    started = datetime.datetime.now(datetime.UTC)
    try:
        raw, cfg, found = check_file(config)
    except ConfigFileError as e:
        raise FlashError("%s: cannot read the install record (%s)" % (config, e), 2) from None
    if not isinstance(cfg, dict):
        raise FlashError("%s: not a device config" % config, exitcodes.BAD_INPUT)
    findings = [f.as_dict() for f in found if f.field.startswith("install")]
    # the link UART or a silent port is named in a second, before mpremote waits on it
    found_port = ports.identify(port)
    if found_port.kind != ports.REPL:
        raise FlashError(found_port.message, found_port.code)
    try:
        board = Board(port)  # from here the firmware is stopped: it is restarted whatever happens
    except FlashError as e:  # the port opened a moment ago: the REPL went away, or never came
        raise FlashError(str(e), exitcodes.UNREACHABLE) from None
    info: dict[str, Any] = {}
    bumps: list[dict[str, Any]] = []
    head = fw = None
    try:
        info = board.identify()
        check_supported(info)
        check_board_runs(config, raw, cfg, running_config(board))
        # read first, while the stopped heap is least cut up: the tests below leave it in
        # pieces too small for the code that reads files (1 KB, with the gateway link)
        head = log_head(board)
        fw = firmware_digest(board)
        override = read_override(board)
        echo("self-test on %s (the safety loop is stopped; the valve is closed)" % port)
        checks = outputs(board, ask, echo)
        results = run_selftest(board, echo)
        if not any(r["check"] == "end" for r in results):
            raise FlashError("the self-test did not finish: %s" % results[-1:])
        about = next((r for r in results if r["check"] == "about"), {})
        checks += [as_check(r, ask) for r in results if r["result"] != "info"]
        gate = [c for c in checks if c["check"].startswith("detector.") or c["check"] == "valve"]
        if not bump:
            echo("bump test: not run (--no-bump): the record cannot be PASS")
        elif gate and all(c["result"] in ("pass", NOT_CONFIRMED) for c in gate):
            echo("bump test: test gas must close the valve")
            _load_selftest(board, _BUMP)
            for place, d in enumerate(cfg.get("detectors") or []):
                name = human.detector(place, d.get("address"))
                actor = virtual or bumptest.Person(echo)
                latching = (cfg.get("valve") or {}).get("kind") == "latching"
                bumps.append(bumptest.run(board, place, d["address"], name, actor, echo,
                                          latching))  # fmt: skip
                echo("  %-31s %-8s %s" % (name, bumps[-1]["result"].upper(), bumps[-1].get(
                    "detail") or "%s ms from the high alarm to valve closed"
                    % bumps[-1].get("high_to_closed_ms")))  # fmt: skip
        else:
            echo("bump test: not run (a detector or the valve did not pass)")
    except TransportError as e:  # the board's own error, in its words (the heap, say)
        raise FlashError("the board stopped the test: %s" % str(e).strip()[-300:]) from None
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
            # a test the host left running (Ctrl-C here, an error reading its lines) holds the
            # valve as it was, open in the bump test, until its own time runs out, and keeps
            # the REPL busy so the restart below never reaches the board: stop it first (its
            # finally closes the valve; at an idle prompt Ctrl-C does nothing)
            board.t.serial.write(b"\x03")
            time.sleep(0.2)
            board.restart(info.get("platform", "esp32"))
        except Exception:  # noqa: BLE001 - a board that cannot be restarted from here is closed
            try:
                board.close()
            except Exception:  # noqa: BLE001
                pass
    if override is not None and "config_digest" in override:
        # made for the config the board runs, or for an earlier one
        override = dict(override, current=override["config_digest"] == about.get("cfg"))
    board_info = {"id": about.get("device"), "firmware": about.get("fw"), "digest": fw,
                  "config_digest": about.get("cfg"),
                  "micropython": ".".join(str(x) for x in info.get("version", [])),
                  "platform": info.get("platform")}  # fmt: skip
    finished = datetime.datetime.now(datetime.UTC)
    rec = commrecord.build(cfg=cfg, installer=installer, board=board_info, checks=checks,
                           bumps=bumps, findings=findings, override=override, log_head=head,
                           started=started, finished=finished)  # fmt: skip
    rec = signed.sign(rec, key)
    try:
        paths, pdf_error = commrecord.write(out_dir, rec, finished.astimezone(), pdf)
    except OSError as e:  # checked before the self-test (check_out); the disk filled since?
        raise FlashError(
            "the self-test ran (verdict: %s) but the record could not be written to %s (%s)"
            % (rec["verdict"], out_dir, e.strerror or e)
        ) from None
    return rec, paths, pdf_error


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


def missing(args: Any) -> list[str]:
    """What the record cannot be made without, in words."""
    out = []
    if not (args.installer or "").strip():
        out.append("--installer FILE (your installer.json from gasguard installer keygen: who "
                   "commissions, and the key that signs)")  # fmt: skip
    if not args.config:
        out.append("--config FILE (the device config: its install block goes into the record)")
    return out


def terminal_ask(question: str) -> bool:
    return input(question).strip().lower().startswith("y")


def main(args: Any) -> int:
    lacking = missing(args)
    if lacking:
        print("gasguard commission: the record needs %s" % " and ".join(lacking), file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:  # before the board is touched: a record that cannot be signed is not worth a test
        installer, key = identity.load(Path(args.installer), Path(args.key) if args.key else None)
        check_out(Path(args.out))
        virtual = None
        if args.virtual:
            from gasguard.tools.installer.configcheck import ConfigFileError, read_file

            try:
                _, cfg = read_file(Path(args.config))
            except ConfigFileError as e:
                raise FlashError("%s: %s" % (args.config, e), exitcodes.BAD_INPUT) from None
            try:
                virtual = bumptest.Virtual.from_file(Path(args.virtual), cfg
                                                     if isinstance(cfg, dict) else {}, print)
            except bumptest.VirtualError as e:
                raise FlashError("--virtual %s: %s" % (args.virtual, e),
                                 exitcodes.BAD_INPUT) from None  # fmt: skip
    except identity.IdentityError as e:
        print("gasguard commission: %s" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    except FlashError as e:
        print("gasguard commission: %s" % e, file=sys.stderr)
        return e.code
    ask = terminal_ask if not args.yes and sys.stdin.isatty() else None
    if ask is None and not args.yes:
        print(
            "gasguard commission: no terminal to ask on: the lamps, buzzer and fan will be "
            "recorded as not confirmed and the verdict cannot be PASS (run it at a terminal, "
            "or --yes to accept that)",
            file=sys.stderr,
        )
    try:
        rec, paths, pdf_error = commission(
            args.port, Path(args.out), installer, key, Path(args.config), ask=ask,
            virtual=virtual, pdf=not args.no_pdf, bump=not args.no_bump)  # fmt: skip
    except (KeyboardInterrupt, EOFError):  # Ctrl-C, or Ctrl-D at a question: the board restarted
        print("gasguard commission: interrupted: no record was written. A board it reached "
              "was restarted: the valve stays closed until staff reset it on site",
              file=sys.stderr)  # fmt: skip
        return exitcodes.FAILED
    except FlashError as e:
        print("gasguard commission: %s" % e, file=sys.stderr)
        if e.code == exitcodes.FAILED:  # the board was reached and stopped: it was restarted
            print("the board was restarted: the valve stays closed until staff reset it on site",
                  file=sys.stderr)  # fmt: skip
        return e.code
    print("verdict: %s" % rec["verdict"])
    for why in rec["verdict_reasons"]:
        print("  %s" % why)
    for b in rec["bump_tests"]:
        if b.get("high_to_closed_ms") is not None:
            print("valve closed %d ms after the high alarm (%s)"
                  % (b["high_to_closed_ms"], commrecord.named(rec, b["detector"])))  # fmt: skip
    if rec.get("install_rules_overridden"):
        print("install rules overridden at flashing: see the record")
    print("record: %s (signed by %s, key %s)" % (", ".join(str(p) for p in paths.values()),
                                                 installer["name"], installer["key_id"]))
    if pdf_error:
        print("gasguard commission: the PDF was not printed: %s" % pdf_error, file=sys.stderr)
    print("the board restarted: the valve stays closed until staff reset it on site")
    if not commrecord.placed(rec):
        print("gasguard commission: WARNING: %s (%s has no install block: where each detector is "
              "mounted is not on record; add it and commission again)"
              % (commrecord.NO_INSTALL, args.config), file=sys.stderr)  # fmt: skip
    if rec["verdict"] == commrecord.PASS:
        return exitcodes.OK
    # --yes: the installer chose a record whose only gaps are outputs nobody was asked about
    only_unasked = all(w.endswith(": " + NOT_CONFIRMED) and w.split(":")[0] in OUTPUTS
                       for w in rec["verdict_reasons"])  # fmt: skip
    return exitcodes.OK if args.yes and only_unasked else exitcodes.FAILED


def register(sub: Any) -> None:
    c = sub.add_parser(
        "commission",
        help="run the acceptance test (self-test and bump test), write the signed record",
        epilog="here:\n"
        "  1  the verdict is not PASS (with --yes, INCOMPLETE only for unasked outputs is 0),\n"
        "     or the config has no install block (no install record: placement not checked)\n"
        "  2  --installer or --config missing, an identity or key that cannot sign, --out not\n"
        "     a writable directory, --virtual not this device's virtual board, the port is the\n"
        "     board's link UART (or another device), not its USB REPL, or the board runs\n"
        "     another config than --config (another device, or a config changed since)\n"
        "  3  nothing answers on the port, or another program holds it",
    )
    c.add_argument("--port", required=True, help="the board's USB serial port, or a vboard REPL")
    c.add_argument("--config", help="the device config (JSON) whose install block to record "
                   "(required)")  # fmt: skip
    c.add_argument("--installer", help="your installer.json from `gasguard installer keygen` "
                   "(required)")  # fmt: skip
    c.add_argument("--key", help="your signing key (default: installer-key.pem beside "
                   "--installer)")  # fmt: skip
    c.add_argument("--out", default=".", help="directory for the record (default: here)")
    c.add_argument("--virtual", metavar="FILE", help="the endpoints `gasguard vboard` printed: "
                   "its detector simulator supplies the test gas and its panel holds RESET")
    c.add_argument("--no-pdf", action="store_true", help="JSON and HTML only")
    c.add_argument("--no-bump", action="store_true", help="skip the bump test (the verdict "
                   "is then INCOMPLETE: gas never proved to close the valve)")  # fmt: skip
    c.add_argument(
        "--yes",
        action="store_true",
        help="do not ask what was seen: recorded as not confirmed (the verdict says so), exit 0",
    )
    c.set_defaults(run=main)
