# Power-cut test helper: opens (and so repairs) a log directory the way a board does at boot and
# reports whether the chain verifies and which records are there. Prints "LOGCHECK {json}".
# usage: micropython log_check.py ROOT
import json
import sys

from gasguard.eventlog import EventLog

log = EventLog(sys.argv[1], seg=16, max_segments=8).open()
ids_ok = True
prev = None
for n in range(log.first, log.next):
    body = log.read(n)
    if body is None:
        ids_ok = False
        break
    if prev is not None and body["id"][0] == prev[0] and body["id"][1] != prev[1] + 1:
        ids_ok = False
    prev = body["id"]
print(
    "LOGCHECK "
    + json.dumps(
        {
            "chain_ok": log.chain_ok,
            "first": log.first,
            "next": log.next,
            "torn": log.torn,
            "ids_contiguous": ids_ok,
        }
    )
)
