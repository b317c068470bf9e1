"""The map's outlines (一张图): district, street or grid boundaries as GeoJSON, supplied by the
deployment (`gasguard regulator serve --geojson FILE`) and checked once, when the console starts.

The file is input like any other: too large, not UTF-8 JSON, NaN or infinite or out-of-range
coordinates, an unclosed ring, a geometry that is not a polygon, more features or positions than
a browser draws well: refused (BadGeoJSON, the command's exit 2) saying what and where. Units'
own places are the registry's lat/lon, never this file's.

A feature's `properties.node` names the node of the jurisdiction tree it outlines: an account
sees the outlines of its node, of the nodes above it and of those under it; an outline naming no
node is for the whole city's accounts only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fastjsonschema

MAX_BYTES = 8 * 1024 * 1024  # a city's districts and streets, simplified for the screen
MAX_FEATURES = 10_000
MAX_POSITIONS = 500_000  # what the browser draws without stalling a phone

_POSITION = {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}}
_POLYGON = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 4,
                                                      "items": _POSITION}}  # fmt: skip
# what a thing is (its type) is checked before what it lacks: "a Point is not an outline" says
# more than "coordinates missing" (fastjsonschema checks allOf in order)
_GEOMETRY = {
    "type": "object",
    "allOf": [
        {"required": ["type"], "properties": {"type": {"enum": ["Polygon", "MultiPolygon"]}}},
        {"required": ["coordinates"]},
    ],
    "if": {"properties": {"type": {"const": "Polygon"}}},
    "then": {"properties": {"coordinates": _POLYGON}},
    "else": {"properties": {"coordinates": {"type": "array", "minItems": 1, "items": _POLYGON}}},
}
_FEATURE = {
    "type": "object",
    "allOf": [
        {"required": ["type"], "properties": {"type": {"const": "Feature"}}},
        {"required": ["geometry"]},
    ],
    "properties": {
        "properties": {
            "type": ["object", "null"],
            "properties": {
                "node": {"type": "string", "minLength": 1, "maxLength": 128},
                "name": {"type": "string", "maxLength": 200},
            },
        },
        "geometry": _GEOMETRY,
    },
}
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "allOf": [
        {"required": ["type"], "properties": {"type": {"const": "FeatureCollection"}}},
        {"required": ["features"]},
    ],
    "properties": {
        "features": {"type": "array", "minItems": 1, "maxItems": MAX_FEATURES, "items": _FEATURE},
    },
}
_VALIDATE = fastjsonschema.compile(SCHEMA)


class BadGeoJSON(ValueError):
    """The boundaries file is refused; str() says what and where."""


@dataclass(frozen=True)
class Boundaries:
    features: tuple[dict[str, Any], ...]  # each: type, properties {node, name}, geometry

    def seen_from(self, nodes: set[str] | None) -> dict[str, Any]:
        """The FeatureCollection an account sees: nodes are the tree's nodes it may see (None:
        the whole city, every outline)."""
        return {
            "type": "FeatureCollection",
            "features": [f for f in self.features
                         if nodes is None or f["properties"].get("node") in nodes],
        }  # fmt: skip


def _refuse_constant(name: str) -> Any:
    raise BadGeoJSON("%s is not a number JSON allows" % name)


def _one_key_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # two readers could take different values: refuse the doubt
        raise BadGeoJSON("a key appears twice in one object")
    return obj


def _flat(kind: str, polygons: list) -> list:
    """The polygons with every position as [lon, lat]: the checked members alone."""
    flat = [[[[p[0], p[1]] for p in ring] for ring in polygon] for polygon in polygons]
    return flat[0] if kind == "Polygon" else flat


def _polygons(geometry: dict[str, Any]) -> list:
    c = geometry["coordinates"]
    return [c] if geometry["type"] == "Polygon" else c


def parse(raw: bytes) -> Boundaries:
    if len(raw) > MAX_BYTES:
        raise BadGeoJSON("more than %d MiB" % (MAX_BYTES // 2**20))
    try:
        doc = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_one_key_each,
                         parse_constant=_refuse_constant)  # fmt: skip
    except UnicodeDecodeError:
        raise BadGeoJSON("not UTF-8") from None
    except RecursionError:
        raise BadGeoJSON("nested too deep for GeoJSON") from None
    except ValueError as e:  # JSONDecodeError, and ours
        raise BadGeoJSON(str(e) if isinstance(e, BadGeoJSON) else "not JSON: %s" % e) from None
    try:
        _VALIDATE(doc)
    except fastjsonschema.JsonSchemaValueException as e:
        where = e.name.removeprefix("data").lstrip(".") or "the document"
        what = e.message.removeprefix(e.name).strip()
        if e.name.endswith("geometry.type"):
            what += " (outlines only: Point, LineString and the rest are not boundaries)"
        raise BadGeoJSON("%s %s" % (where, what)) from None
    positions = 0
    kept = []
    for i, feature in enumerate(doc["features"]):
        for p, polygon in enumerate(_polygons(feature["geometry"])):
            for r, ring in enumerate(polygon):
                where = "features[%d] polygon %d ring %d" % (i, p, r)
                positions += len(ring)
                if positions > MAX_POSITIONS:
                    raise BadGeoJSON("more than %d positions: simplify the outlines (e.g. "
                                     "mapshaper -simplify)" % MAX_POSITIONS)  # fmt: skip
                for lon, lat, *_ in ring:
                    if not (-180 <= lon <= 180 and -90 <= lat <= 90):  # NaN and inf too
                        raise BadGeoJSON("%s: [%r, %r] is not a longitude, latitude in degrees"
                                         % (where, lon, lat))  # fmt: skip
                if ring[0][:2] != ring[-1][:2]:
                    raise BadGeoJSON("%s: not closed (its last position must be its first)"
                                     % where)  # fmt: skip
        props = feature.get("properties") or {}
        geometry = feature["geometry"]
        kept.append({
            "type": "Feature",
            "properties": {k: props[k] for k in ("node", "name") if k in props},
            # rebuilt from what was checked: an altitude (1e999 is inf, which JSON cannot
            # send on) and any other member of the file's geometry stay behind
            "geometry": {"type": geometry["type"],
                         "coordinates": _flat(geometry["type"], _polygons(geometry))},
        })  # fmt: skip
    return Boundaries(tuple(kept))


def load(path: str) -> Boundaries:
    """The file at path, checked; BadGeoJSON names the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # a device or a pipe that never ends is cut here
    except OSError as e:
        raise BadGeoJSON("--geojson %s: %s" % (path, e.strerror or e)) from None
    try:
        return parse(raw)
    except BadGeoJSON as e:
        raise BadGeoJSON("--geojson %s: %s" % (path, e)) from None
