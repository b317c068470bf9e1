"""`gasguard fuzz TARGET --iterations N`: coverage-guided fuzzing (atheris, i.e. libFuzzer) of the
code that reads what others send us.

Targets: cbor (the device's CBOR decoder), frame (the streaming frame decoder: COBS, CRC, header,
HMAC), modbus (the firmware's Modbus RTU response parser, fed the input as a slave's answer),
config (the firmware's config loader and validator), profile (the detector profile builder, its
register decoding and the config's scaling rule). Each harness states what a bad input may do
(raise the module's own ValueError with a reason, or be counted and dropped) and anything else
is a crash. libFuzzer enforces the other two rules: -timeout (no hang) and -rss_limit_mb (no
unbounded memory).

config and profile are structure-aware: random bytes seldom parse as JSON, so their custom
mutator (JsonMutator) parses the input and changes the document, starting from valid configs and
profiles: keys deleted, added and misspelt, values of every other type, numbers at and past
their bounds (NaN, infinities, huge), nesting, lists grown past their limits, subtrees swapped
between seeds; now and then libFuzzer's own byte mutation and a byte order mark, for the
parser. Beyond "no other exception", the config harness holds the firmware's first error to
the one its collect() reports first, and every config the board accepts to the JSON Schema; the
profile harness holds the config's blind-detector rule to a full scale computed here.

The fuzzing runs in a child process (libFuzzer exits the process when done); the parent reads its
summary and writes the figures as JSON.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from gasguard.tools.device import load_firmware_module

TARGETS = ("cbor", "frame", "modbus", "config", "profile", "gateway")
TIMEOUT_S = 5  # one input taking longer than this is a hang
RSS_LIMIT_MB = 1024
MAX_LEN = 4096
MAX_LEN_JSON = 9000  # past the board's 8192-byte config bound
ROOT = Path(__file__).resolve().parents[2]


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
    mb.sleep_us = lambda us: None  # time here is the harness's own: the silence needs no waiting
    bus = ScriptedBus()
    m = mb.Master(bus, 9600, 100)
    results = set(range(mb.OK, mb._E_TRAILING + 1))  # every named result, never BUSY or idle

    def one(data: bytes) -> None:
        if len(data) < 2:
            return
        count, fc = data[0] % 40, 3 + (data[1] & 1)  # ask for what the slave answers (or not)
        bus.data = b""
        m.state = mb._IDLE
        m.got = m.late = 0
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


class JsonMutator:
    """libFuzzer custom mutator for JSON documents (a config, or a profile followed by
    "\\n\\n" and register bytes when tail is set). Deterministic for a given seed, as libFuzzer
    asks. Its own code is not instrumented (see _instrument_ours): coverage is the target's."""

    NUMBERS = (0, -1, 1, 2, 3, 4, 7, 24.9, 25, 25.5, 39, 40, 60, 61, 247, 248, 1000, 1001,
               9600, 9600.0, 9601, 65535, 65536, -32768, -32769, 2**31, 2**64, -(2**64),
               10**30, 1e308, -1e308, 1e-320, 0.5, float("nan"), float("inf"),
               float("-inf"))  # fmt: skip

    def __init__(self, seeds: list[Any], tail: bool = False) -> None:
        self.seeds = seeds
        self.tail = tail
        self.keys: set[str] = set()
        self.strings: set[str] = {"", " ", "\n", "k\u00fcche", "\ud800", "x" * 40, "1 ", "01"}
        for sch in (_schema(), *seeds):
            self._vocabulary(sch)
        self.keys_list = sorted(self.keys)
        self.strings_list = sorted(self.strings)

    def _vocabulary(self, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                self.keys.add(k)
                self._vocabulary(v)
        elif isinstance(node, list):
            for v in node:
                self._vocabulary(v)
        elif isinstance(node, str) and len(node) < 40:
            self.strings.add(node)

    def __call__(self, data: bytes, max_size: int, seed: int) -> bytes:
        import atheris

        rng = random.Random(seed)
        head, _, regs = data.partition(b"\n\n") if self.tail else (data, b"", b"")
        if rng.random() < 0.08:  # the parser's turn: libFuzzer's byte mutations
            return atheris.Mutate(data, max_size)
        try:
            doc = json.loads(head)
        except (ValueError, RecursionError):
            doc = copy.deepcopy(rng.choice(self.seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            doc = self._once(doc, rng)
        try:
            out = json.dumps(doc, allow_nan=True).encode()
        except (ValueError, RecursionError):
            out = json.dumps(rng.choice(self.seeds)).encode()
        if rng.random() < 0.03:
            out = b"\xef\xbb\xbf" + out
        if self.tail:
            if rng.random() < 0.5:
                regs = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 70)))
            out += b"\n\n" + regs
        if len(out) > max_size:
            out = json.dumps(rng.choice(self.seeds)).encode()[:max_size]
        return out

    def _nodes(self, doc: Any, depth: int = 0, parent: Any = None, key: Any = None):
        yield parent, key, doc
        if depth > 30:
            return
        if isinstance(doc, dict):
            for k, v in doc.items():
                yield from self._nodes(v, depth + 1, doc, k)
        elif isinstance(doc, list):
            for i, v in enumerate(doc):
                yield from self._nodes(v, depth + 1, doc, i)

    def _value(self, rng: random.Random, old: Any) -> Any:
        pick = rng.randrange(9)
        if pick < 3:
            v = rng.choice(self.NUMBERS)
            if isinstance(old, (int, float)) and not isinstance(old, bool) and rng.random() < 0.5:
                v = rng.choice((old + 1, old - 1, old * 10, -old, old / 10, float(old)))
            return v
        if pick < 5:
            return rng.choice(self.strings_list)
        if pick == 5:
            return rng.choice((True, False, None))
        if pick == 6:
            return rng.choice(([], {}, [old], {"x": old}))
        if pick == 7:  # a subtree of a seed: an inline profile where a name was, and so on
            _, _, sub = rng.choice(list(self._nodes(rng.choice(self.seeds))))
            return copy.deepcopy(sub)
        return "x" * rng.choice((33, 254, 256, 1001, 3000))

    def _typo(self, key: str, rng: random.Random) -> str:
        if not key:
            return rng.choice(self.keys_list)
        i = rng.randrange(len(key))
        return rng.choice((key[:i] + key[i + 1 :], key[:i] + key[i] + key[i:],
                           key[:i] + key[i + 1 : i + 2] + key[i : i + 1] + key[i + 2 :],
                           key.upper(), key + "s"))  # fmt: skip

    def _once(self, doc: Any, rng: random.Random) -> Any:
        nodes = list(self._nodes(doc))
        parent, key, node = rng.choice(nodes)
        op = rng.randrange(6)
        if op == 0 or parent is None and not isinstance(node, (dict, list)):
            new = self._value(rng, node)
            if parent is None:
                return new
            parent[key] = new
        elif isinstance(node, dict) and op in (1, 2, 3):
            if op == 1 and node:
                del node[rng.choice(list(node))]
            elif op == 2:
                k = rng.choice(self.keys_list)
                node[self._typo(k, rng) if rng.random() < 0.3 else k] = self._value(rng, None)
            elif node:
                k = rng.choice(list(node))
                node[self._typo(k, rng)] = node.pop(k)
        elif isinstance(node, list) and op in (1, 2, 3):
            if op == 1 and node:
                del node[rng.randrange(len(node))]
            elif op == 2 and node:
                item = rng.choice(node)
                node.extend(copy.deepcopy(item) for _ in range(rng.choice((1, 1, 7, 12))))
            else:
                node.append(self._value(rng, None))
        elif op == 4 and parent is not None:
            parent[key] = rng.choice(([node], {"x": node}))
        elif parent is not None:
            parent[key] = self._value(rng, node)
        return doc


def _schema() -> dict[str, Any]:
    from gasguard.tools.installer.configcheck import schema

    return schema()


def _fast_schema():
    """The device-config schema compiled (fastjsonschema, draft-07 keywords only): microseconds
    a check, where the reference validator takes a millisecond."""
    import fastjsonschema

    s = _schema()
    s["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(s), fastjsonschema.JsonSchemaValueException


def _corpus_bases() -> list[dict[str, Any]]:
    lines = (ROOT / "tests" / "tools" / "config-corpus.jsonl").read_text().splitlines()
    return [json.loads(x)["config"] for x in lines if '"kind": "base"' in x]


def _config():
    fw = load_firmware_module("config")
    check, refused = _fast_schema()

    def one(data: bytes) -> None:
        if len(data) > fw._MAX_BYTES:
            return  # the loader refuses it by its size before reading it (tests/micropython)
        try:
            d = fw.decode(data)
        except fw.ConfigError as e:
            assert e.field == "config" and e.reason
            return
        first = None
        try:
            fw.Config(d)
        except fw.ConfigError as e:
            assert e.field and e.reason  # every refusal names the field and the reason
            first = e.field
        errors = fw.collect(d)  # every error at once (config check): never another exception
        assert all(e.field and e.reason for e in errors)
        assert (errors[0].field if errors else None) == first, (first, errors[:3])
        if first is None:  # the board runs it: its rules written down must agree
            try:
                check({k: v for k, v in d.items() if k != "install"})
            except refused as e:
                raise AssertionError("the board accepts what the schema refuses: %s" % e) from None

    seeds = [
        json.loads(p.read_text()) for p in sorted((ROOT / "examples" / "hotpot-88").glob("*.json"))
    ]
    seeds.append(json.loads((ROOT / "hil_tests" / "board-config.json").read_text()))
    seeds += _corpus_bases()
    return one, [json.dumps(x).encode() for x in seeds], JsonMutator(seeds)


def _blind_oracle(p) -> tuple[bool, bool]:
    """(blind, range too short) for a built profile against a 50 %LEL high set point, computed
    here as the decoder computes a reading: the highest raw value its type and raw_range allow."""
    high = 500
    if p.rtype != 2:
        lo, hi = (-32768, 32767) if p.rtype == 0 else (0, 65535)
        lo, hi = max(lo, p.raw_lo), min(hi, p.raw_hi)
        top = max(lo * p.mul // p.div, hi * p.mul // p.div) + p.add
        if top < high:
            return True, False
    return False, p.valid_hi < high


def _profile():
    from gasguard.protocol import profile, profile_parse

    fw = load_firmware_module("config")
    base = {"device_id": "k1", "gas": "ng", "key_hex": "00" * 16,
            "valve": {"kind": "nc", "pin": 25},
            "detectors": [{"address": 1, "gas": "methane", "profile": None}]}  # fmt: skip
    where = "detectors[0].profile"

    def one(data: bytes) -> None:
        text, _, regs = data.partition(b"\n\n")
        try:
            d = json.loads(text)
        except (ValueError, RecursionError):
            return
        fields: set[str] = set()
        if isinstance(d, dict):  # the same profile inline in a config (a string is a name)
            cfg = copy.deepcopy(base)
            cfg["detectors"][0]["profile"] = d
            fields = {e.field for e in fw.collect(cfg)}
        try:
            p = profile_parse.build(d)
        except profile.ProfileError as e:
            assert e.field and e.reason
            assert not isinstance(d, dict) or any(f.startswith(where) for f in fields), fields
            return
        assert p.mul != 0  # a zero multiplier reads 0 %LEL whatever the gas: refused
        blind, short = _blind_oracle(p)
        assert (where + ".reading" in fields) == blind, (fields, blind)
        assert (where + ".valid_tenths" in fields) == short, (fields, short)
        buf = bytearray(3 + 2 * p.count)
        buf[3 : 3 + len(regs)] = regs[: 2 * p.count]
        t = p.tenths(buf, 3)
        assert isinstance(t, int)
        assert 0 <= p.state(buf, 3, t) < len(profile.STATE_NAMES)

    profiles = [
        json.loads(p.read_text()) for p in sorted((ROOT / "protocol" / "profiles").glob("*.json"))
    ]
    profiles += [
        x["detectors"][0]["profile"]
        for x in _corpus_bases()
        if isinstance(x["detectors"][0]["profile"], dict)
    ]
    seeds = [json.dumps(x).encode() + b"\n\n" + bytes([0, 120, 0, 0]) for x in profiles]
    return one, seeds, JsonMutator(profiles, tail=True)


def _canary():
    """Not a product target: proves the set-up finds a planted crash (tests/test_fuzz.py)."""

    def one(data: bytes) -> None:
        if data[:4] == b"GGX!":
            raise RuntimeError("planted crash reached")

    return one, [b"GG"], None


BUILD = {
    "cbor": _cbor,
    "frame": _frame,
    "modbus": _modbus,
    "config": _config,
    "profile": _profile,
    "_canary": _canary,
    "gateway": lambda: __import__("gasguard.tools.bench.fuzz_gateway", fromlist=["build"]).build(),
}


# --- the child: atheris ----------------------------------------------------------------------


def _build(target: str):
    """(one_input, seeds, custom mutator or None) for a target."""
    built = BUILD[target]()
    return built if len(built) == 3 else (*built, None)


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
                                "__main__", "gasguard.tools.bench.fuzz_gateway")):
            continue
        for obj in list(vars(mod).values()):
            if obj is JsonMutator or getattr(obj, "__name__", "") == "JsonMutator":
                continue  # the mutator's own coverage is not the target's
            if isinstance(obj, types.FunctionType) and obj.__module__ == name:
                fn(obj)
            elif isinstance(obj, type) and obj.__module__ == name:
                for v in list(vars(obj).values()):
                    fn(v)


def _child(target: str, runs: int, corpus: str) -> None:
    import atheris

    one, _, mutator = _build(target)
    _instrument_ours(atheris, one)
    atheris.Setup(
        [
            sys.argv[0],
            "-runs=%d" % runs,
            "-timeout=%d" % TIMEOUT_S,
            "-rss_limit_mb=%d" % RSS_LIMIT_MB,
            "-max_len=%d" % (MAX_LEN_JSON if mutator is not None else MAX_LEN),
            "-print_final_stats=1",
            corpus,
        ],
        one,
        **({"custom_mutator": mutator} if mutator is not None else {}),
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
        _, seeds, mutator = _build(target)
        for i, s in enumerate(seeds):
            (corpus / ("seed-%d" % i)).write_bytes(s)
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gasguard.tools.bench.fuzz",
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
        "mutator": "structure-aware JSON (JsonMutator)" if mutator is not None else "libFuzzer",
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


def register(sub: Any) -> None:
    f = sub.add_parser("fuzz", help="coverage-guided fuzzing of a decoder or loader")
    f.add_argument("target", choices=list(TARGETS) + ["_canary"], metavar="TARGET",
                   help="one of: %s" % ", ".join(TARGETS))  # fmt: skip
    f.add_argument("--iterations", type=int, default=100_000, help="inputs to run")
    f.add_argument("--json", metavar="FILE", help="write the figures here")
    f.add_argument("--keep", metavar="DIR", help="save inputs that crashed or hung here")
    f.set_defaults(run=main)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
