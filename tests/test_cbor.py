"""CBOR codec cross-checked with cbor2 both ways, in CPython and in the MicroPython unix port."""

import math
import random
import struct
import tempfile
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasguard.protocol import cbor
from gasguard.tools.sim import micropython

U64 = 2**64
ints = st.integers(min_value=-U64, max_value=U64 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True)
keys = st.one_of(ints, st.text(max_size=12), st.binary(max_size=12), st.booleans(), st.none())
scalars = st.one_of(
    ints, floats, st.text(max_size=40), st.binary(max_size=40), st.booleans(), st.none()
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=25,
)


def same(a, b) -> bool:
    """Equality that compares NaN with NaN and tells 0.0 from -0.0; tuples equal lists."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=400)
@given(values)
def test_our_encoding_is_cbor2_canonical_and_decodes_back(v):
    ours = cbor.dumps(v)
    assert ours == cbor2.dumps(v, canonical=True)
    assert same(cbor2.loads(ours), v)
    assert same(cbor.loads(ours), v)


@settings(max_examples=400)
@given(values)
def test_we_decode_cbor2_default_and_canonical(v):
    assert same(cbor.loads(cbor2.dumps(v)), v)
    assert same(cbor.loads(cbor2.dumps(v, canonical=True)), v)


@given(st.lists(scalars, max_size=5))
def test_indefinite_arrays_decode(items):
    enc = b"\x9f" + b"".join(cbor2.dumps(i) for i in items) + b"\xff"
    assert same(cbor.loads(enc), items)


def test_indefinite_strings_and_maps():
    assert cbor.loads(bytes.fromhex("5f42010243030405ff")) == b"\x01\x02\x03\x04\x05"
    assert cbor.loads(bytes.fromhex("7f657374726561646d696e67ff")) == "streaming"
    assert cbor.loads(bytes.fromhex("bf61610161629f0203ffff")) == {"a": 1, "b": [2, 3]}


@pytest.mark.parametrize(
    ("hexdata", "why"),
    [
        ("", "past the end"),
        ("19", "past the end"),  # truncated argument
        ("1c", "reserved"),
        ("5c", "reserved"),
        ("5a0000ffff00", "past the end"),  # byte string longer than the data
        ("9b00000000ffffffff", "past the end"),  # 4 G items announced: refused, not allocated
        ("bb00000000ffffffff", "past the end"),
        ("81" * 40 + "00", "nesting"),
        ("0001", "trailing"),
        ("ff", "break"),
        ("c11a514b67b0", "tags"),
        ("f7", "simple"),
        ("f820", "simple"),
        ("62c328", "UTF-8"),
        ("a2010201", "past the end"),
        ("a201020103", "duplicate"),
        ("a1800102", "unhashable"),
        ("5f01ff", "chunk"),
        ("8201ff", "break"),
    ],
)
def test_malformed_input_raises_one_clear_error(hexdata, why):
    with pytest.raises(cbor.CBORError, match=why):
        cbor.loads(bytes.fromhex(hexdata))


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data):
    try:
        cbor.loads(data)
    except cbor.CBORError:
        pass


@pytest.mark.parametrize("v", [U64, -U64 - 1, object(), {1, 2}])
def test_unencodable_values_raise(v):
    with pytest.raises(cbor.CBORError):
        cbor.dumps(v)


def test_shortest_exact_floats():
    assert cbor.dumps(1.5) == bytes.fromhex("f93e00")  # half
    assert cbor.dumps(100000.0) == bytes.fromhex("fa47c35000")  # single
    assert cbor.dumps(1.1) == bytes.fromhex("fb3ff199999999999a")  # double
    # what an ESP32 (single-precision floats) produces for 0.4 is a single, and exact
    f32 = struct.unpack(">f", struct.pack(">f", 0.4))[0]
    assert cbor.dumps(f32)[:1] == b"\xfa"
    assert cbor2.loads(cbor.dumps(f32)) == f32


def _corpus(n: int, seed: int = 2026):
    rnd = random.Random(seed)

    def scalar():
        k = rnd.randrange(9)
        if k == 0:
            return rnd.choice([0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**63, U64 - 1])
        if k == 1:
            return -rnd.randrange(1, 2 ** rnd.choice([5, 8, 16, 32, 64]) + 1)
        if k == 2:
            return rnd.choice(
                [0.0, -0.0, 1.5, 65504.0, 1e300, -2.5e-8, float("inf")]
            ) * rnd.choice([1, -1])
        if k == 3:
            return struct.unpack(">f", struct.pack(">f", rnd.uniform(-1e6, 1e6)))[0]
        if k == 4:
            return rnd.uniform(-1e9, 1e9)
        if k == 5:
            return "".join(rnd.choice("gas 水阀🔥LEL%") for _ in range(rnd.randrange(30)))
        if k == 6:
            return rnd.randbytes(rnd.randrange(300))
        return rnd.choice([True, False, None])

    def value(depth=0):
        k = rnd.randrange(10)
        if depth < 4 and k == 0:
            return [value(depth + 1) for _ in range(rnd.randrange(6))]
        if depth < 4 and k == 1:
            d = {}
            for _ in range(rnd.randrange(6)):
                key = rnd.choice([scalar(), rnd.randrange(-100, 100), "k%d" % rnd.randrange(50)])
                if isinstance(key, float) and math.isnan(key):
                    continue
                d[key] = value(depth + 1)
            return d
        return scalar()

    return [value() for _ in range(n)]


def test_corpus_round_trips_in_micropython():
    """1,200 cbor2-encoded values decode in MicroPython; its re-encodings are cbor2-canonical."""
    corpus = _corpus(1200)
    lines = [
        "%s %s" % (cbor2.dumps(v).hex(), cbor2.dumps(v, canonical=True).hex()) for v in corpus
    ]
    script = Path(__file__).parent / "micropython" / "cbor_corpus.py"
    with tempfile.TemporaryDirectory() as tmp:
        lib = micropython.stage(Path(tmp), firmware=False)
        data = Path(tmp) / "corpus.txt"
        data.write_text("\n".join(lines) + "\n")
        proc = micropython.run(script, [str(lib), str(data)], timeout=300)
    out = proc.stdout.decode().splitlines()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out[-1] == "corpus ok %d" % len(corpus), out[-5:]
    reencoded = out[:-1]
    assert len(reencoded) == len(corpus)
    for v, hexline in zip(corpus, reencoded, strict=True):
        ours = bytes.fromhex(hexline)
        assert ours == cbor2.dumps(v, canonical=True)
        assert same(cbor2.loads(ours), v)
