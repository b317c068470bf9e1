"""The map's outlines file (regulator/geo.py) at its boundary: `gasguard regulator serve
--geojson FILE` refuses anything but a sane FeatureCollection of polygons, saying what and where,
with exit 2 before it opens the database or serves anything."""

from __future__ import annotations

import copy
import json

import pytest

from gasguard.regulator import geo
from gasguard.tools.cli import main as cli

from .map_fixture import GEOJSON, geojson_bytes


def with_geometry(geometry) -> bytes:
    doc = copy.deepcopy(GEOJSON)
    doc["features"][1]["geometry"] = geometry
    return json.dumps(doc).encode()


SQUARE = [[121.0, 31.0], [121.1, 31.0], [121.1, 31.1], [121.0, 31.1], [121.0, 31.0]]
REFUSED = {
    "empty": (b"", "not JSON"),
    "truncated": (geojson_bytes()[:-3], "not JSON"),
    "not UTF-8": ("名".encode("gb18030") + geojson_bytes(), "not UTF-8"),
    "NaN": (geojson_bytes().replace(b"121.3", b"NaN", 1), "NaN"),
    "Infinity": (geojson_bytes().replace(b"121.3", b"-Infinity", 1), "Infinity"),
    "1e999": (geojson_bytes().replace(b"121.3", b"1e999", 1), "features[0] polygon 0 ring 0"),
    "latitude 91": (with_geometry({"type": "Polygon", "coordinates": [[[0, 91], *SQUARE[1:4],
                                                                       [0, 91]]]}), "[0, 91]"),
    "a point": (with_geometry({"type": "Point", "coordinates": [121.0, 31.0]}),
                "features[1].geometry.type must be one of"),
    "lines": (with_geometry({"type": "LineString", "coordinates": SQUARE}), "outlines only"),
    "a collection": (with_geometry({"type": "GeometryCollection", "geometries": []}),
                     "features[1].geometry.type"),
    "no geometry": (with_geometry(None), "features[1].geometry must be object"),
    "an open ring": (with_geometry({"type": "Polygon", "coordinates": [SQUARE[:4] + [[121, 32]]]}),
                     "features[1] polygon 0 ring 0: not closed"),
    "a short ring": (with_geometry({"type": "Polygon", "coordinates": [SQUARE[:3]]}),
                     "must contain at least 4 items"),
    "text for a number": (with_geometry({"type": "Polygon", "coordinates": [[["121", 31],
                                         *SQUARE[1:4], ["121", 31]]]}), "must be number"),
    "a bare geometry": (json.dumps({"type": "Polygon", "coordinates": [SQUARE]}).encode(),
                        "type must be same as const definition: FeatureCollection"),
    "no features": (b'{"type": "FeatureCollection", "features": []}', "at least 1 items"),
    "a key twice": (b'{"type": "FeatureCollection", "type": "x", "features": []}', "twice"),
    "a number node": (geojson_bytes().replace(b'"node": "minhang"', b'"node": 7'),
                      "features[0].properties.node must be string"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "too deep"),
    "too large": (b" " * (geo.MAX_BYTES + 1), "more than 8 MiB"),
}  # fmt: skip


@pytest.mark.parametrize("name", REFUSED)
def test_a_bad_outline_file_is_refused_saying_what_and_where(name):
    raw, says = REFUSED[name]
    with pytest.raises(geo.BadGeoJSON) as e:
        geo.parse(raw)
    assert says in str(e.value)


def test_too_many_positions_is_refused():
    ring = [[121, 31]] * (geo.MAX_POSITIONS + 1)  # short to write: the size cap is not the one
    with pytest.raises(geo.BadGeoJSON, match="more than 500000 positions"):
        geo.parse(with_geometry({"type": "Polygon", "coordinates": [ring]}))


def test_each_account_sees_its_nodes_outlines_and_only_the_city_the_unnamed():
    doc = copy.deepcopy(GEOJSON)
    doc["features"].append({"type": "Feature", "properties": None, "geometry": {
        "type": "MultiPolygon", "coordinates": [[SQUARE]]}})  # fmt: skip
    b = geo.parse(json.dumps(doc).encode("utf-8-sig"))
    assert len(b.seen_from(None)["features"]) == 4
    assert [f["properties"]["name"] for f in b.seen_from({"xuhui"})["features"]] == ["徐汇区"]
    assert b.seen_from(set())["features"] == []
    raw = geojson_bytes().replace(b'"name": "', b'"adcode": 310104, "name": "')
    assert geo.parse(raw).features == geo.parse(geojson_bytes()).features  # only node and name


@pytest.mark.parametrize("content", [REFUSED["NaN"][0], REFUSED["a point"][0], None, "dir",
                                     "/dev/zero"])  # fmt: skip
def test_serve_refuses_the_file_with_exit_2_before_anything_else(tmp_path, capsys, content):
    if content is None:
        path = str(tmp_path / "missing.geojson")
    elif content == "dir":
        path = str(tmp_path)
    elif content == "/dev/zero":  # endless: read no further than the cap
        path = content
    else:
        path = str(tmp_path / "districts.geojson")
        (tmp_path / "districts.geojson").write_bytes(content)
    db = tmp_path / "no-such.db"  # not opened: the outlines are checked first
    code = cli(["regulator", "serve", "--db", str(db), "--geojson", path])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("gasguard regulator serve: --geojson %s: " % path), err
    assert not db.exists()
