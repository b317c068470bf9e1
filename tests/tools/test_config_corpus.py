"""The config corpus (tests/tools/config-corpus.jsonl): each good config passes and each bad one is
refused for its field by the JSON Schema (protocol/schemas/device-config.schema.json), by the
firmware's validator under CPython (first error, as at boot, and every error, as config check
collects them) and by `gasguard config check`; tests/micropython/mp_test_config.py runs the same
cases through the same validator on the MicroPython VM. A rule the schema cannot state says why
("beyond_schema"), and the firmware alone refuses it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gasguard.tools import device, image
from gasguard.tools.installer import configcheck

CORPUS = Path(__file__).with_name("config-corpus.jsonl")
LINES = [json.loads(line) for line in CORPUS.read_text().splitlines()]
BASES = {c["name"]: c["config"] for c in LINES if c.get("kind") == "base"}


def cases(kind: str) -> list[dict]:
    return [c for c in LINES if c.get("kind") == kind]


def build(case: dict) -> dict:
    d = copy.deepcopy(BASES[case["base"]])
    for path, value in case.get("set", {}).items():
        node, key = _node(d, path)
        node[key] = copy.deepcopy(value)
    for path in case.get("del", ()):
        node, key = _node(d, path)
        del node[key]
    return d


def _node(d, path: str):
    *parents, last = path.split(".")
    for k in parents:
        d = d[int(k)] if isinstance(d, list) else d[k]
    return d, int(last) if isinstance(d, list) else last


def firmware_first(cfg: dict) -> str | None:
    fw = device.load_firmware_module("config")
    try:
        fw.Config(cfg)
    except fw.ConfigError as e:
        return e.field
    return None


def schema_fields(cfg: dict) -> set[str]:
    return {f for f, _, _ in configcheck.schema_errors(cfg)}


def ids(kind: str) -> list[str]:
    return [c["name"] for c in cases(kind)]


def test_the_corpus_covers_every_rule_kind():
    assert len(cases("good")) >= 10 and len(cases("bad")) >= 150
    assert {c["base"] for c in cases("bad")} == set(BASES)


@pytest.mark.parametrize("case", cases("good"), ids=ids("good"))
def test_good_configs_pass_everywhere(case):
    cfg = build(case)
    assert schema_fields(cfg) == set()
    assert firmware_first(cfg) is None
    assert configcheck.firmware_errors(cfg) == []


@pytest.mark.parametrize("case", cases("bad"), ids=ids("bad"))
def test_bad_configs_are_refused_for_their_field(case):
    cfg = build(case)
    field = case["field"]
    # the board: first error at boot, and every error as config check collects them
    fw = device.load_firmware_module("config")
    assert firmware_first(cfg) == field
    assert [e.field for e in fw.collect(cfg)] == [field]
    # the schema: exactly that field, or nothing when the rule is beyond it (and says why)
    if "beyond_schema" in case:
        assert schema_fields(cfg) == set()
    else:
        assert schema_fields(cfg) == {field}
    # config check names it, and never lets --override flash it (without key_hex, it takes the
    # key to be in a key file beside the config: gasguard flash --key)
    if field != "key":
        found = [f for f in configcheck.check(cfg) if f.field == field and f.level == "error"]
        assert found and not any(f.overridable for f in found)


@pytest.mark.parametrize("case", cases("install"), ids=ids("install"))
def test_install_records_are_the_schemas_alone(case):
    cfg = build(case)
    assert schema_fields(cfg) == {case["field"]}
    assert firmware_first(cfg) is None  # the board never reads the install block


def _file_bytes(f: dict) -> bytes:
    if "text" in f:
        return f["text"].encode()
    if "hex" in f:
        return bytes.fromhex(f["hex"])
    if "repeat" in f:
        return f["repeat"].encode() * f["times"]
    raw = json.dumps(BASES[f["base"]]).encode()
    if f.get("bom"):
        raw = b"\xef\xbb\xbf" + raw
    return raw + b" " * (f.get("pad", 0) - len(raw))


@pytest.mark.parametrize("f", cases("file"), ids=ids("file"))
def test_whole_files_load_or_are_refused_alike(f, tmp_path):
    fw = device.load_firmware_module("config")
    path = tmp_path / "config.json"
    path.write_bytes(_file_bytes(f))
    try:
        fw.load(str(path))
        got = None
    except fw.ConfigError as e:
        got = e.field
        assert f.get("reason", "") in e.reason
    except ImportError:  # a good file reached plain(), which needs the board's start module
        got = None
    assert got == f["field"]
    # config check: a file the board refuses is no config (exit 2) or a finding on "config"
    try:
        _, cfg, found = configcheck.check_file(path)
    except configcheck.ConfigFileError:
        assert got == "config"
    else:
        errors = [x.field for x in found if x.level == "error"]
        assert ("config" in errors) == (got == "config")


def test_the_schema_names_every_shipped_profile():
    s = configcheck.schema()
    names = s["properties"]["detectors"]["items"]["properties"]["profile"]["then"]["enum"]
    shipped = sorted(p.stem for p in (image.protocol_dir() / "profiles").glob("*.json"))
    assert sorted(names) == shipped
    # and each shipped profile file is a valid inline profile
    from jsonschema import Draft202012Validator

    v = Draft202012Validator({**s["$defs"]["profile"], "$defs": s["$defs"]})
    for name in shipped:
        profile = json.loads(
            (image.protocol_dir() / "profiles" / (name + ".json")).read_text()
        )
        assert list(v.iter_errors(profile)) == [], name


def test_the_schema_is_valid_2020_12_and_draft_07():
    from jsonschema import Draft7Validator, Draft202012Validator

    s = configcheck.schema()
    Draft202012Validator.check_schema(s)
    Draft7Validator.check_schema({**s, "$schema": "http://json-schema.org/draft-07/schema#"})
