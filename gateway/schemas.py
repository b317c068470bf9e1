"""The protocol/ JSON Schemas, compiled once: every payload is checked before it is published.

fastjsonschema turns each schema into Python code (a few microseconds a check, where a generic
validator takes a hundred). The schemas only use keywords that mean the same in draft-07, which
fastjsonschema implements; tests/test_gateway_schemas.py holds it to the reference validator.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import fastjsonschema

from gasguard.protocol import cloudevents

_FILES = {
    cloudevents.SCHEMA_EVENT: "event.schema.json",
    cloudevents.SCHEMA_STATE: "state.schema.json",
    cloudevents.SCHEMA_GATEWAY: "gateway-status.schema.json",
    cloudevents.SCHEMA_REJECTED: "rejected.schema.json",
    cloudevents.SCHEMA_COMMISSIONING: "commissioning.schema.json",
}
RECORD_FILE = "commissioning.schema.json"  # its $defs/record: the record's top-level fields


class SchemaError(ValueError):
    """A payload the regulator must not receive; .field is the JSON path, .reason the rule."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


def load(name: str) -> dict[str, Any]:
    text = resources.files("gasguard.protocol.schemas").joinpath(name).read_text()
    return json.loads(text)


def _compile(name: str):
    schema = load(name)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


_VALIDATORS = {uri: _compile(f) for uri, f in _FILES.items()}


def _compile_record():
    schema = load(RECORD_FILE)["$defs"]["record"]  # self-contained: no $ref out of it
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


_RECORD = _compile_record()


def check_record(record: Any) -> None:
    """Raise SchemaError unless a commissioning record has the top-level fields the delivery
    relies on (the installer's schema holds the rest)."""
    try:
        _RECORD(record)
    except fastjsonschema.JsonSchemaValueException as e:
        field = "record" + e.name[4:] if e.name.startswith("data") else "record"
        raise SchemaError(field, e.message.replace(e.name, field, 1)) from None


def check(payload: dict[str, Any]) -> dict[str, Any]:
    """Raise SchemaError unless payload validates against the schema its dataschema names."""
    ds = payload.get("dataschema")
    v = _VALIDATORS.get(ds) if isinstance(ds, str) else None  # [] or {} is unhashable
    if v is None:
        raise SchemaError("dataschema", "unknown schema %r" % payload.get("dataschema"))
    try:
        v(payload)
    except fastjsonschema.JsonSchemaValueException as e:
        # fastjsonschema names the payload "data": "data.data.lel" is the field data.lel
        field = e.name[5:] if e.name.startswith("data.") else "payload"
        raise SchemaError(field, e.message.replace(e.name, field, 1)) from None
    return payload
