# The device config validator in the MicroPython VM, against tests/tools/config-corpus.json: the
# good configs pass, every bad one is refused with its field (as the JSON Schema and the
# validator under CPython refuse it), the install block is ignored, and the loader turns any file
# (too big, not JSON, not UTF-8, a byte order mark) into a ConfigError and nothing else.
import gc
import json

from gasguard import config

_HERE = __file__[: __file__.rfind("/")]
_bases = {}


def _cases(kind):
    # one line at a time: the whole corpus does not fit a 110 KB heap as one object
    with open(_HERE + "/../tools/config-corpus.jsonl") as f:
        for line in f:
            c = json.loads(line)
            k = c.get("kind")
            if k == "base" and c["name"] not in _bases:
                _bases[c["name"]] = c["config"]
            elif k == kind:
                yield c


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _node(d, path):
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    return d, int(last) if isinstance(d, list) else last


def build(case):
    d = _copy(_bases[case["base"]])
    for path, value in case.get("set", {}).items():
        node, k = _node(d, path)
        node[k] = _copy(value)
    for path in case.get("del", ()):
        node, k = _node(d, path)
        del node[k]
    return d


def _field(d):
    try:
        config.Config(d)
    except config.ConfigError as e:
        return e.field, e.reason
    return None, None


def _case(name):
    for kind in ("good", "bad", "install"):
        for case in _cases(kind):
            if case["name"] == name:
                return build(case), case.get("field")
    raise KeyError(name)


def _refused(name):
    d, field = _case(name)
    got, reason = _field(d)
    assert got == field, (name, field, got, reason)
    return reason


def _disagreements(kind):
    wrong = []
    for case in _cases(kind):
        got, reason = _field(build(case))
        if got != case.get("field"):
            wrong.append((case["name"], case.get("field"), got, reason))
        gc.collect()
    return wrong


def test_good_configs_pass():
    wrong = _disagreements("good")
    assert not wrong, wrong


def test_example_values():
    d, _ = _case("the hotpot-88 main kitchen")
    v = config.Config(d)
    assert v.device_id == "hotpot-88-main"
    assert v.alarm["low_alarm_tenths"] == 200 and v.alarm["high_alarm_tenths"] == 500
    assert len(v.detectors) == 2 and v.valve["kind"] == "nc"
    assert len(v.digest_hex()) == 16
    d, _ = _case("an integer written with a fraction")
    v = config.Config(d)
    assert v.bus["baud"] == 9600 and type(v.bus["baud"]) is int and v.loop_ms == 20


def test_every_bad_config_is_refused_for_its_field():
    wrong = _disagreements("bad")
    assert not wrong, "\n".join(repr(w) for w in wrong)


def test_the_install_block_is_ignored():
    for case in _cases("install"):
        case.pop("field")  # the schema refuses it; the board never reads the install block
        got, reason = _field(build(case))
        assert got is None, (case["name"], got, reason)


# --- issue 19 item 7: a typo is an error, never a default nobody chose -------------------------


def test_typos_are_refused_not_defaulted():
    for name in ("typo: close_on_lo", "typo: low_alarm", "typo: posiiton_pin", "typo: baudrate"):
        assert "unknown" in _refused(name), name


# --- item 2: an inline profile of the wrong shape is a ConfigError, never a TypeError ----------


def test_inline_profile_of_the_wrong_shape_is_a_config_error():
    for name in (
        "status a number",
        "status an object",
        "a status rule that is a number",
        "inline reading a number",
        "reset_alarm a number",
        "raw range with true",
        "status map a list",
    ):
        _refused(name)


# --- item 6: a detector that can never read the high set point is refused -----------------------


def test_blind_detectors_are_refused():
    assert "0" in _refused("zero multiplier (blind detector)")
    for name in (
        "blind: full scale below the high set point",
        "blind: a divisor that scales the reading down",
        "measuring range ends below the high set point",
    ):
        assert "high alarm" in _refused(name), name


# --- item 2: the loader, whatever the file holds -----------------------------------------------


def _write(path, f):
    # a piece at a time: the test's own heap is the board's 110 KB
    with open(path, "wb") as out:
        if "text" in f:
            out.write(f["text"].encode())
        elif "hex" in f:
            out.write(bytes.fromhex(f["hex"]))
        elif "repeat" in f:
            for _ in range(f["times"]):
                out.write(f["repeat"].encode())
        else:
            raw = json.dumps(_bases[f["base"]]).encode()
            out.write(b"\xef\xbb\xbf" + raw if f.get("bom") else raw)
            for _ in range(f.get("pad", 0) - len(raw)):
                out.write(b" ")


def test_load_turns_any_file_into_a_config_error():
    wrong = []
    for i, f in enumerate(_cases("file")):
        path = "corpus-%d.json" % i
        _write(path, f)
        try:
            config.load(path)
            got, reason = None, None
        except config.ConfigError as e:
            got, reason = e.field, e.reason
        except Exception as e:  # noqa: BLE001 - anything else is the defect under test
            got, reason = "EXCEPTION", "%s: %s" % (type(e).__name__, e)
        want = f.get("field")
        if got != want or (f.get("reason") and f["reason"] not in (reason or "")):
            wrong.append((f["name"], want, got, reason))
    assert not wrong, wrong


def test_size_is_bounded_before_the_file_is_read():
    _write("big.json", {"repeat": " ", "times": 30000})
    try:
        config.load("big.json")
    except config.ConfigError as e:
        assert e.field == "config" and "8192" in e.reason, e.reason
    else:
        raise AssertionError("a 30 KB config was read")
