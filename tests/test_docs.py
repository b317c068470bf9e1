"""Every byte-level example in docs/protocol.md is one of the checked test vectors."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "protocol.json").read_text())
MARK = re.compile(r"<!-- vector: (.+?) -->\s*(?:`([0-9a-f]+)`|```hex\n([0-9a-f\n]+)```)")


def _lookup(path: str) -> str:
    group, name, *field = path.split("/", 2)
    if group == "cbor":
        return next(c["hex"] for c in VECTORS["cbor"] if c["py"] == name)
    key = "name"
    return next(c[field[0]] for c in VECTORS[group] if c[key] == name)


def test_protocol_doc_examples_match_the_vectors():
    text = (ROOT / "docs" / "protocol.md").read_text()
    found = MARK.findall(text)
    assert len(found) >= 8
    for path, inline, block in found:
        shown = inline or block.replace("\n", "")
        assert shown == _lookup(path), path
