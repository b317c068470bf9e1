# Power-cut test helper: appends event records to a log directory as fast as it can and prints
# "W <index>" after each append has returned, until killed.
# usage: micropython log_writer.py ROOT BOOT
import sys

from gasguard.eventlog import EventLog

root = sys.argv[1]
boot = int(sys.argv[2])
log = EventLog(root, seg=16, max_segments=8).open()
print("OPEN next=%d torn=%d chain_ok=%d" % (log.next, log.torn, log.chain_ok))
seq = 0
while True:
    seq += 1
    body = {
        "id": [boot, seq],
        "kind": "alarm.low",
        "up": seq,
        "det": seq % 8,
        "lel": 20.5,
        "detail": "x" * (seq % 40),
    }
    n = log.append(body)
    print("W %d" % n)
