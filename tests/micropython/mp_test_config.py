# The device config validator in the MicroPython VM: the example config passes, and every broken
# field is refused with that field's name.
import json

from gasguard import config


def _example():
    here = __file__
    with open(here[: here.rfind("/")] + "/../../examples/hotpot-88/kitchen-main.json") as f:
        return json.load(f)


def test_example_config_is_valid():
    c = config.Config(_example())
    assert c.device_id == "hotpot-88-main"
    assert c.alarm["low_alarm_tenths"] == 200 and c.alarm["high_alarm_tenths"] == 500
    assert len(c.detectors) == 2 and c.valve["kind"] == "nc"
    assert len(c.digest_hex()) == 16


def _refused(patch, field):
    d = _example()
    for path, value in patch:
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if value is None:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    try:
        config.Config(d)
    except config.ConfigError as e:
        assert e.field == field, (e.field, field, e.reason)
        return e.reason
    raise AssertionError("accepted: %r" % (patch,))


def test_each_bad_field_is_named():
    _refused([("device_id", None)], "device_id")
    _refused([("device_id", "bad/id")], "device_id")
    _refused([("gas", "coal")], "gas")
    _refused([("alarm.low_alarm_pct", 30)], "alarm.low_alarm_pct")
    _refused([("alarm.high_alarm_pct", 70)], "alarm.high_alarm_pct")
    _refused([("alarm.confirm_low", 3)], "alarm.confirm_low")
    _refused([("detectors.0.gas", "propane")], "detectors[0].gas")
    _refused([("detectors.1.address", 1)], "detectors[1].address")
    _refused([("detectors.0.profile", "nope")], "detectors[0].profile")
    _refused([("valve.kind", "ball")], "valve.kind")
    _refused([("valve.kind", "latching"), ("valve.position_pin", None)], "valve.position_pin")
    _refused([("pins.fan", 25)], "pins.fan")  # the valve's GPIO
    _refused([("link.kind", "tcp")], "link.host")
    _refused([("key_hex", "0011")], "key")
    _refused([("loop_ms", 1000)], "loop_ms")


def test_reasons_say_the_rule():
    assert "GB 15322" in _refused([("alarm.low_alarm_pct", 0)], "alarm.low_alarm_pct")
    assert "supervised" in _refused(
        [("valve.kind", "latching"), ("valve.position_pin", None)], "valve.position_pin"
    )
