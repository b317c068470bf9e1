# MicroPython side of tests/test_cbor.py: decode each cbor2 encoding (default and canonical form),
# check both decode to the same value and that re-encoding gives cbor2's canonical bytes exactly.
# usage: micropython cbor_corpus.py LIB_DIR CORPUS_FILE
import sys

sys.path.insert(0, sys.argv[1])
from gasguard.protocol import cbor  # noqa: E402

n = 0
bad = 0
with open(sys.argv[2]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        default_hex, canon_hex = line.split(" ")
        canon = bytes.fromhex(canon_hex)
        a = cbor.dumps(cbor.loads(bytes.fromhex(default_hex)))
        b = cbor.dumps(cbor.loads(canon))
        if a != canon or b != canon:
            bad += 1
            sys.stderr.write("mismatch at %d: %s\n" % (n, line[:200]))
        print(a.hex())
        n += 1
print("corpus ok %d" % n if bad == 0 else "corpus FAIL %d of %d" % (bad, n))
