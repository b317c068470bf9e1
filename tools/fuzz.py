"""`gasguard fuzz TARGET --iterations N`: coverage-guided fuzzing (atheris, i.e. libFuzzer) of the
code that reads what others send us.

Targets: cbor (the device's CBOR decoder), frame (the streaming frame decoder: COBS, CRC, header,
HMAC), modbus (the firmware's Modbus RTU response parser, fed the input as a slave's answer),
config (the firmware's config validator on JSON text), profile (the detector profile loader and
its register decoding). Each harness states what a bad input may do (raise the module's own
ValueError with a reason, or be counted and dropped) and anything else is a crash. libFuzzer
enforces the other two rules: -timeout (no hang) and -rss_limit_mb (no unbounded memory).

The fuzzing runs in a child process (libFuzzer exits the process when done); the parent reads its
summary and writes the figures as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from gasguard.tools.micropython import load_firmware_module

TARGETS = ("cbor", "frame", "modbus", "config", "profile", "gateway")
TIMEOUT_S = 5  # one input taking longer than this is a hang
RSS_LIMIT_MB = 1024
MAX_LEN = 4096
ROOT = Path(__file__).resolve().parents[1]


class ScriptedBus:
    """A detector bus whose slave answers whatever `data` holds (no pacing, no timing)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, buf) -> None:
        pass

    def readinto(self, buf) -> int:
        n = min(len(buf), len(self.data))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


# --- harnesses: build() returns (one_input, seeds) -----------------------------------------------


def _cbor():
    from gasguard.protocol import cbor

    def one(data: bytes) -> None:
        try:
            v = cbor.loads(data)
        except ValueError:  # CBORError (a ValueError) with the reason: a refusal, not a crash
            return
        cbor.dumps(v)  # whatever decodes must encode again

    seeds = [cbor.dumps(x) for x in (0, -1, 1.5, "kitchen", b"\x00\x01", [1, [2]], {"a": 1})]
    return one, seeds


def _frame():
    from gasguard.protocol import auth, frame, messages

    key = bytes(range(16))
    signers = {"kitchen-1": auth.Signer(key)}
    signer = signers["kitchen-1"]

    def one(data: bytes) -> None:
        dec = frame.FrameDecoder(signers.get)
        cut = data[0] % (len(data) + 1) if data else 0
        n = 0
        for part in (data[:cut], data[cut:]):  # a frame split across two reads
            for r in dec.feed(part):
                n += 1
                if isinstance(r, frame.Frame):
                    assert r.device == "kitchen-1"  # only a correctly signed frame gets out
        assert sum(dec.counts.values()) == n

    seeds = [
        messages.pack(signer, messages.ACK, 1, 1, "kitchen-1", messages.ack([(1, 1)])),
        messages.pack(signer, messages.COMMAND, 1, 2, "kitchen-1", messages.command("identify")),
        messages.pack(signer, messages.TIME, 1, 3, "kitchen-1", messages.time_sync(1, 1)),
    ]
    return one, seeds


def _modbus():
    mb = load_firmware_module("modbus")
    bus = ScriptedBus()
    m = mb.Master(bus, 9600, 100)
    results = {mb.OK, mb.E_TIMEOUT, mb.E_SHORT, mb.E_CRC, mb.E_EXCEPTION, mb.E_WRONG_SLAVE,
               mb.E_FRAME}  # fmt: skip

    def one(data: bytes) -> None:
        if len(data) < 2:
            return
        count, fc = data[0] % 40, 3 + (data[1] & 1)  # ask for what the slave answers (or not)
        bus.data = b""
        m.state = mb.IDLE
        if count:
            m.read(1, fc, 0, count, 0)
        else:
            m.write(1, 6, 0, 1, 0)
        bus.data = bytes(data[2:])
        t = 0
        r = mb.BUSY
        while r == mb.BUSY and t <= 200_000:
            r = m.poll(t)
            t += 5000
        assert r in results, r
        if r == mb.OK:  # only a well-formed answer from the right slave is accepted
            n = m.expect
            assert m.rx[0] == 1 and mb.crc16(m.rx, n - 2) == m.rx[n - 2] | (m.rx[n - 1] << 8)

    def answer(count: int, fc: int = 3) -> bytes:
        body = bytes([1, fc, 2 * count]) + bytes(2 * count)
        c = mb.crc16(bytearray(body), len(body))
        return bytes([count, fc & 1]) + body + bytes([c & 0xFF, c >> 8])

    return one, [answer(1), answer(2, 4), answer(4), bytes([1, 1, 1, 0x83, 2, 0xC0, 0xF1])]


def _config():
    fw = load_firmware_module("config")
    key = bytes(16)

    def one(data: bytes) -> None:
        try:
            d = json.loads(data)
        except (ValueError, RecursionError):
            return  # not JSON: the loader's job, before the validator
        try:
            fw.Config(d, key=key)
        except fw.ConfigError as e:
            assert e.field and e.reason  # every refusal names the field and the reason

    seeds = []
    for p in sorted((ROOT / "examples" / "hotpot-88").glob("*.json")):
        cfg = json.loads(p.read_text())
        cfg.pop("install", None)
        seeds.append(json.dumps(cfg).encode())
    seeds.append((ROOT / "hil_tests" / "board-config.json").read_bytes())
    return one, seeds


def _profile():
    from gasguard.protocol import profile, profile_parse

    def one(data: bytes) -> None:
        text, _, regs = data.partition(b"\n\n")
        try:
            d = json.loads(text)
        except (ValueError, RecursionError):
            return
        try:
            p = profile_parse.build(d)
        except profile.ProfileError as e:
            assert e.field and e.reason
            return
        buf = bytearray(3 + 2 * p.count)
        buf[3 : 3 + len(regs)] = regs[: 2 * p.count]
        t = p.tenths(buf, 3)
        assert isinstance(t, int)
        assert 0 <= p.state(buf, 3, t) < len(profile.STATE_NAMES)

    seeds = [
        p.read_bytes() + b"\n\n" + bytes([0, 120, 0, 0])
        for p in sorted((ROOT / "protocol" / "profiles").glob("*.json"))
    ]
    return one, seeds


def _canary():
    """Not a product target: proves the set-up finds a planted crash (tests/test_fuzz.py)."""

    def one(data: bytes) -> None:
        if data[:4] == b"GGX!":
            raise RuntimeError("planted crash reached")

    return one, [b"GG"]


BUILD = {
    "cbor": _cbor,
    "frame": _frame,
    "modbus": _modbus,
    "config": _config,
    "profile": _profile,
    "_canary": _canary,
    "gateway": lambda: __import__("gasguard.tools.fuzz_gateway", fromlist=["build"]).build(),
}


# --- the child: atheris ----------------------------------------------------------------------


def _instrument_ours(atheris, one) -> None:
    """Coverage for our code only (protocol/, the firmware modules, the harness): instrumenting
    the standard library as well makes every input ten times slower for nothing we own."""
    seen: set[int] = set()

    def fn(f) -> None:
        if isinstance(f, types.FunctionType) and id(f) not in seen:
            seen.add(id(f))
            atheris.instrument_func(f)

    fn(one)
    for name, mod in list(sys.modules.items()):
        if not name.startswith(("gasguard.protocol", "gasguard.gateway", "gasguard_fw_",
                                "__main__", "gasguard.tools.fuzz_gateway")):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, types.FunctionType) and obj.__module__ == name:
                fn(obj)
            elif isinstance(obj, type) and obj.__module__ == name:
                for v in list(vars(obj).values()):
                    fn(v)


def _child(target: str, runs: int, corpus: str) -> None:
    import atheris

    one, _ = BUILD[target]()
    _instrument_ours(atheris, one)
    atheris.Setup(
        [
            sys.argv[0],
            "-runs=%d" % runs,
            "-timeout=%d" % TIMEOUT_S,
            "-rss_limit_mb=%d" % RSS_LIMIT_MB,
            "-max_len=%d" % MAX_LEN,
            "-print_final_stats=1",
            corpus,
        ],
        one,
    )
    atheris.Fuzz()


# --- the parent ------------------------------------------------------------------------------


def fuzz(target: str, iterations: int, keep: Path | None = None) -> dict[str, Any]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "atheris is not installed (bash scripts/setup.sh installs it)"
        ) from None
    from importlib.metadata import version

    with tempfile.TemporaryDirectory(prefix="gasguard-fuzz-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        _, seeds = BUILD[target]()
        for i, s in enumerate(seeds):
            (corpus / ("seed-%d" % i)).write_bytes(s)
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gasguard.tools.fuzz",
                "--child",
                target,
                str(iterations),
                str(corpus),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            cwd=tmp,
            env=dict(os.environ, PYTHONHASHSEED="0"),
            check=False,
        )
        seconds = time.monotonic() - t0
        out = proc.stdout + proc.stderr
        crash_files = sorted(Path(tmp).glob("crash-*")) + sorted(Path(tmp).glob("timeout-*"))
        crash_files += sorted(Path(tmp).glob("oom-*"))
        saved = []
        if keep is not None and crash_files:
            keep.mkdir(parents=True, exist_ok=True)
            for f in crash_files:
                dst = keep / ("%s-%s" % (target, f.name))
                dst.write_bytes(f.read_bytes())
                saved.append(str(dst))
        corpus_size = len(list(corpus.iterdir()))
    done = re.search(r"Done (\d+) runs in (\d+) second", out)
    runs = int(done.group(1)) if done else _last_count(out)
    if "Uncaught Python exception" in out or "deadly signal" in out:
        result = "crash"
    elif "ALARM: working on the last Unit" in out or "timeout after" in out:
        result = "hang"
    elif "out-of-memory" in out:
        result = "oom"
    elif proc.returncode != 0 or not done:
        result = "error"
    else:
        result = "ok"
    cov = re.findall(r"cov: (\d+)", out)
    report: dict[str, Any] = {
        "target": target,
        "engine": "atheris %s (libFuzzer)" % version("atheris"),
        "python": sys.version.split()[0],
        "iterations_requested": iterations,
        "runs": runs,
        "seconds": round(seconds, 1),
        "execs_per_s": round(runs / seconds) if seconds else None,
        "coverage_edges": int(cov[-1]) if cov else None,
        "corpus": corpus_size,
        "timeout_s": TIMEOUT_S,
        "rss_limit_mb": RSS_LIMIT_MB,
        "result": result,
    }
    if result != "ok":
        report["detail"] = _failure(out)
        report["inputs"] = saved
    return report


def _last_count(out: str) -> int:
    counts = re.findall(r"^#(\d+)", out, re.M)
    return int(counts[-1]) if counts else 0


def _failure(out: str) -> str:
    for marker in ("=== Uncaught Python exception: ===", "ALARM:", "out-of-memory", "ERROR"):
        i = out.find(marker)
        if i >= 0:
            return out[i : i + 1500]
    return out[-1500:]


def main(args: Any) -> int:
    try:
        report = fuzz(args.target, args.iterations, Path(args.keep) if args.keep else None)
    except RuntimeError as e:
        print("gasguard fuzz: %s" % e, file=sys.stderr)
        return 2
    print(
        "%-8s %s: %d runs in %.1f s (%s/s), %s edges, corpus %d"
        % (report["target"], report["result"].upper(), report["runs"], report["seconds"],
           report["execs_per_s"], report["coverage_edges"], report["corpus"])
    )  # fmt: skip
    if report["result"] != "ok":
        print(report.get("detail", ""), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["result"] == "ok" else 1


def add_parser(sub: Any) -> None:
    f = sub.add_parser("fuzz", help="coverage-guided fuzzing of a decoder or loader")
    f.add_argument("target", choices=list(TARGETS) + ["_canary"], metavar="TARGET",
                   help="one of: %s" % ", ".join(TARGETS))  # fmt: skip
    f.add_argument("--iterations", type=int, default=100_000, help="inputs to run")
    f.add_argument("--json", metavar="FILE", help="write the figures here")
    f.add_argument("--keep", metavar="DIR", help="save inputs that crashed or hung here")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
