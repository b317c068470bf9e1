# Protocol test vectors (tests/vectors/protocol.json, quoted in docs/protocol.md).
# This one file runs under the MicroPython unix port (via tests/conftest.py) and under CPython
# (via tests/test_vectors.py): the same protocol code must give the same bytes on both.
import json

from gasguard.protocol import auth, cbor, cobs, frame, messages, profile, profile_parse


def _vectors():
    here = __file__
    cut = here.rfind("/")
    with open(here[:cut] + "/../vectors/protocol.json") as f:
        return json.load(f)


V = _vectors()
KEY = bytes.fromhex(V["key_hex"])


def _same(a, b):
    # equality that also tells 0.0 from -0.0 and compares NaN with NaN
    if isinstance(a, float) and isinstance(b, float):
        if a != a:
            return b != b
        return a == b and str(a)[0] == str(b)[0]
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and _same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _eval(src):
    return eval(src, {"inf": float("inf"), "nan": float("nan")})


def test_cbor_encode_vectors():
    for case in V["cbor"]:
        got = cbor.dumps(_eval(case["py"])).hex()
        assert got == case["hex"], (case["py"], got, case["hex"])


def test_cbor_decode_vectors():
    for case in V["cbor"]:
        got = cbor.loads(bytes.fromhex(case["hex"]))
        assert _same(got, _eval(case["py"])), (case["py"], got)


def test_cobs_vectors():
    for case in V["cobs"]:
        data = bytes.fromhex(case["data_hex"])
        enc = cobs.encode(data)
        assert enc.hex() == case["encoded_hex"], case
        assert 0 not in enc
        assert cobs.decode(enc) == data


def test_hmac_vectors():
    s = auth.Signer(KEY)
    for case in V["hmac"]:
        assert s.tag(bytes.fromhex(case["msg_hex"])).hex() == case["tag_hex"]


def test_frame_vectors_encode():
    s = auth.Signer(KEY)
    for case in V["frames"]:
        body = _eval(case["body_py"])
        assert cbor.dumps(body).hex() == case["body_hex"], case["name"]
        wire = messages.pack(s, case["type"], case["boot"], case["seq"], case["device"], body)
        assert wire.hex() == case["wire_hex"], case["name"]


def test_frame_vectors_decode():
    dec = frame.FrameDecoder(auth.Signer(KEY))
    wire = b"".join(bytes.fromhex(c["wire_hex"]) for c in V["frames"])
    out = dec.feed(wire)
    assert len(out) == len(V["frames"])
    for got, case in zip(out, V["frames"]):
        assert isinstance(got, frame.Frame), (case["name"], got)
        assert (got.mtype, got.boot, got.seq, got.device) == (
            case["type"],
            case["boot"],
            case["seq"],
            case["device"],
        )
        body = messages.decode_body(got.mtype, got.body)
        assert _same(body, _eval(case["body_py"])), case["name"]


def test_drop_vectors():
    for case in V["drops"]:
        dec = frame.FrameDecoder(auth.Signer(KEY))
        out = dec.feed(bytes.fromhex(case["wire_hex"]))
        assert len(out) == 1 and isinstance(out[0], frame.Dropped), case["name"]
        assert out[0].reason == case["reason"], (case["name"], out[0].reason)
        assert dec.counts[case["reason"]] == 1


def test_profile_vectors():
    import gc

    loaded = {}  # one Profile per name: the VM's 110k heap also holds every vector
    for case in V["profiles"]:
        p = loaded.get(case["profile"])
        if p is None:
            gc.collect()
            p = loaded[case["profile"]] = profile_parse.load(case["profile"])
        buf = bytearray()
        for r in case["registers"]:
            buf.append(r >> 8)
            buf.append(r & 0xFF)
        t = p.tenths(buf, 0)
        assert t == case["tenths"], (case, t)
        assert profile.STATE_NAMES[p.state(buf, 0, t)] == case["state"], case


def test_no_message_opens_a_valve():
    # The catalogue itself: no type, command or event kind speaks of opening or energising.
    words = ("open", "energi", "unlatch", "resume", "restore_valve")
    for name in list(messages.TYPE_NAMES.values()) + list(messages.COMMANDS):
        for w in words:
            assert w not in name, name
    for cmd in ("open", "open_valve", "valve.open", "reset", "energise"):
        try:
            messages.command(cmd)
        except messages.MessageError as e:
            assert e.field == "cmd"
        else:
            raise AssertionError("command %s accepted" % cmd)
