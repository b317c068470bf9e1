"""Property tests (hypothesis) for two of the firmware's input parsers, run in CPython on the very
files the board runs (MicroPython's const() and ticks_diff() supplied): the Modbus RTU response
parser and the config validator. The MicroPython-side tests run the same modules in the VM."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gasguard.tools.bench.fuzz import ScriptedBus
from gasguard.tools.device import load_firmware_module

mb = load_firmware_module("modbus")
mb.sleep_us = lambda us: None  # the tests' time is their own: the 3.5-character silence is too
fwc = load_firmware_module("config")
EXAMPLE = json.loads(
    (Path(__file__).parents[1] / "examples" / "hotpot-88" / "kitchen-main.json").read_text()
)
EXAMPLE.pop("install")
KEY = bytes(16)


def transact(answer: bytes, count: int, slave: int = 1, fc: int = 3) -> int:
    bus = ScriptedBus()
    m = mb.Master(bus, 9600, 100)
    m.read(slave, fc, 0, count, 0)
    bus.data = answer
    t, r = 0, mb.BUSY
    while r == mb.BUSY:
        r = m.poll(t)
        t += 5000
        assert t < 1_000_000, "the parser never finished"
    return r


def good_answer(count: int, regs: bytes, slave: int = 1, fc: int = 3) -> bytes:
    body = bytes([slave, fc, 2 * count]) + regs[: 2 * count].ljust(2 * count, b"\0")
    c = mb.crc16(bytearray(body), len(body))
    return body + bytes([c & 0xFF, c >> 8])


@given(st.integers(1, 32), st.binary(max_size=64))
def test_a_well_formed_answer_is_accepted(count, regs):
    assert transact(good_answer(count, regs), count) == mb.OK


@given(st.integers(1, 32), st.binary(max_size=64), st.data())
def test_any_single_byte_corruption_is_never_accepted(count, regs, data):
    ans = bytearray(good_answer(count, regs))
    i = data.draw(st.integers(0, len(ans) - 1))
    ans[i] ^= data.draw(st.integers(1, 255))
    assert transact(bytes(ans), count) != mb.OK


@given(st.integers(1, 32), st.binary(max_size=80))
def test_arbitrary_bytes_end_in_a_named_result(count, raw):
    r = transact(raw, count)
    assert r in (mb.OK, mb.E_TIMEOUT, mb.E_SHORT, mb._E_CRC, mb._E_EXCEPTION, mb._E_WRONG_SLAVE,
                 mb.E_FRAME, mb._E_TRAILING)  # fmt: skip
    if r == mb.OK:  # only what a real slave at address 1 would send, CRC and all
        assert raw[0] == 1 and raw[1] == 3 and raw[2] == 2 * count


def test_wrong_slave_and_exception_are_told_apart():
    assert transact(good_answer(2, b"", slave=7), 2) == mb._E_WRONG_SLAVE
    exc = bytes([1, 0x83, 2])
    c = mb.crc16(bytearray(exc), 3)
    assert transact(exc + bytes([c & 0xFF, c >> 8]), 2) == mb._E_EXCEPTION
    assert transact(b"", 2) == mb.E_TIMEOUT
    assert transact(good_answer(2, b"")[:5], 2) == mb.E_SHORT


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
    st.text(max_size=12),
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


PATHS = list(_paths(EXAMPLE))


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_value), min_size=1, max_size=3))
def test_config_refusals_name_the_field_and_never_crash(changes):
    cfg = copy.deepcopy(EXAMPLE)
    for path, value in changes:
        d = cfg
        try:
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced the parent
    try:
        fwc.Config(cfg, key=KEY)
    except fwc.ConfigError as e:
        assert e.field and e.reason
        top = e.field.split(".")[0].split("[")[0]
        assert top in cfg or top in ("config", "key"), e.field


def test_the_example_config_is_valid():
    c = fwc.Config(copy.deepcopy(EXAMPLE), key=KEY)
    assert c.device_id == "hotpot-88-main"
