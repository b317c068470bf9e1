"""The gateway's border for a commissioning record file (issue 26): bytes in, a record the
gateway may carry or a refusal naming why.

The gateway cannot judge a signature (it holds no installer's registered key: the regulator
does), so it checks what it can and what would otherwise be delivered for nothing: the size
before reading, strict JSON (no duplicate keys, NaN or Infinity; a UTF-8 BOM is allowed, as
editors write one), an object, no floats and the canonical form within record.MAX_BYTES
(protocol/record.py), the top-level fields (commissioning.schema.json, $defs/record), a
well-formed Ed25519 signature member whose key_id matches its public key (an unsigned record
is refused here), a finish time a calendar has and not ahead of this box's clock by more than
the regulator allows (the newest record is held, so one dated ahead would refuse every real one
after it), and that the record is for this gateway's site and one of its devices.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, NamedTuple

from gasguard.protocol import record as rec
from gasguard.protocol import strictjson

from . import schemas

MAX_FILE = rec.MAX_BYTES + 64 * 1024  # the canonical form's cap, plus an editor's indentation
# a record nests ~6 deep; json.loads recurses, so a deep file must not reach it. And the
# regulator refuses an envelope nested past 16 (boundary.RECORD_MAX_DEPTH), the record inside
# it two deeper: what is carried must be what it reads
MAX_DEPTH = 14
# the regulator's (boundary.FUTURE_SLACK_S): it refuses a record finished further ahead and
# judges it again only when the gateway sends it again, at its next connect, maybe weeks on
FUTURE_SLACK_S = 300.0


class Refused(ValueError):
    """A record file the gateway will not carry; str() says why, in one line."""


class Checked(NamedTuple):
    record: dict[str, Any]
    digest: str  # sha256 hex of the canonical bytes (protocol/record.py)
    device: str
    record_id: str
    finished_at: str
    key_id: str


def decode(raw: bytes) -> Any:
    if len(raw) > MAX_FILE:
        raise Refused("%d bytes: more than a record holds (%d)" % (len(raw), MAX_FILE))
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if strictjson.nesting_depth(raw, MAX_DEPTH) > MAX_DEPTH:
        raise Refused("JSON: nested deeper than %d" % MAX_DEPTH)
    try:
        return strictjson.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refused("not UTF-8 text") from None
    except strictjson.StrictJsonError as e:
        raise Refused("JSON: %s" % e) from None
    except ValueError as e:  # JSONDecodeError
        raise Refused("not JSON: %s" % str(e)[:120]) from None


def check(raw: bytes, site: str, devices: frozenset[str] | set[str]) -> Checked:
    record = decode(raw)
    if not isinstance(record, dict):
        raise Refused("not a commissioning record: a JSON object is expected")
    try:
        digest = rec.digest(record)  # floats, size
        schemas.check_record(record)
        key_id = rec.signer(record)  # unsigned, another algorithm, a malformed signature
    except (rec.RecordError, schemas.SchemaError) as e:
        raise Refused(str(e)) from None
    try:
        finished = datetime.datetime.fromisoformat(record["finished_at"].replace("Z", "+00:00"))
    except ValueError:  # the schema's pattern admits 2026-02-30
        why = "finished_at %r is not a real date and time" % record["finished_at"]
        raise Refused(why) from None
    if finished.timestamp() > time.time() + FUTURE_SLACK_S:
        # held as the device's newest, it would refuse every real record after it, for years
        raise Refused("finished_at %s is in the future (this site box's clock says %s)"
                      % (record["finished_at"], time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime())))  # fmt: skip
    if record["site"] != site:
        raise Refused("the record is for site %r; this gateway serves site %r"
                      % (record["site"], site))  # fmt: skip
    if record["device"] not in devices:
        raise Refused("the record is for device %r, which this gateway does not serve (its keys "
                      "file lists %s)" % (record["device"], ", ".join(sorted(devices))))
    return Checked(record, digest, record["device"], record["record_id"], record["finished_at"],
                   key_id)  # fmt: skip
