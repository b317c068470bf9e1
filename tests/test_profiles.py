"""Detector profile loader: shipped profiles, refusals with the field, decoding never fails."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gasguard.protocol import profile, profile_parse

SHIPPED = ["generic-x10", "float32-status-mode", "scaled-1200"]
BASE = {"name": "t", "function": 4, "start": 0, "count": 2, "reading": {"offset": 0}}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name):
    p = profile_parse.load(name)
    assert p.name == name and p.function in (3, 4) and 1 <= p.count <= 32


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"function": 6}, "function"),
        ({"count": 0}, "count"),
        ({"reading": {"offset": 2}}, "reading.offset"),
        ({"reading": {"offset": 1, "type": "float32"}}, "reading.offset"),
        ({"reading": {"offset": 0, "type": "float64"}}, "reading.type"),
        ({"status": [{"kind": "enum", "offset": 1, "map": {"0": "fine"}}]}, "status[0].map.0"),
        ({"status": [{"kind": "bits", "offset": 1, "map": {"16": "fault"}}]}, "status[0].map.16"),
        ({"status": [{"kind": "enum", "offset": 5, "map": {"0": "ok"}}]}, "status[0].offset"),
        ({"status": [{"kind": "magic", "offset": 0}]}, "status[0].kind"),
        ({"valid_tenths": [10, 0]}, "valid_tenths"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_profiles_are_refused_with_the_field(patch, field):
    with pytest.raises(profile.ProfileError) as err:
        profile_parse.load({**BASE, **patch})
    assert err.value.field == field


def test_unknown_profile_name_is_named():
    with pytest.raises(profile.ProfileError, match="no profile named 'nope'"):
        profile_parse.load("nope")
    with pytest.raises(profile.ProfileError, match="invalid profile name"):
        profile_parse.load("../etc/passwd")


@given(st.floats(width=32, allow_nan=False, min_value=-1000, max_value=1000))
def test_float32_conversion_rounds_like_cpython(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    got = profile._f32_tenths(hi, lo)
    want = x * 10
    assert abs(got - want) <= 0.5 + 1e-9


@given(st.sampled_from(SHIPPED), st.binary(min_size=64, max_size=64))
def test_decoding_any_register_data_gives_a_state(name, data):
    p = profile_parse.load(name)
    t = p.tenths(data, 0)
    s = p.state(data, 0, t)
    assert 0 <= s < profile.NOANSWER or s == profile.OVER  # NOANSWER is the poller's alone
    if s == profile.OK:
        assert p.valid_lo <= t <= p.valid_hi
    if s == profile.OVER:  # above the measuring range: gas, whatever the status registers say
        assert t != profile.BAD and t > p.valid_hi


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"reading": {"offset": 0, "mul": 0}}, "reading.mul"),  # a blind detector
        ({"reading": 5}, "reading"),
        ({"status": 5}, "status"),
        ({"status": [5]}, "status[0]"),
        ({"reset_alarm": 5}, "reset_alarm"),
        ({"valid_tenths": [True, 5]}, "valid_tenths"),
        ({"reading": {"offset": 0, "scale": 10}}, "reading.scale"),
        ({"scale": 10}, "scale"),
    ],
)
def test_hostile_profiles_are_a_profile_error(patch, field):
    # issue 19 items 2 and 6: never a TypeError or AttributeError, and no zero multiplier
    with pytest.raises(profile.ProfileError) as err:
        profile_parse.load({**BASE, **patch})
    assert err.value.field == field
