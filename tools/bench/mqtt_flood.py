"""A load generator that costs the machine almost nothing: pre-encoded MQTT PUBLISH packets
written to one socket, in its own process.

Why not mosquitto_pub -l: it publishes every line to the one topic given with -t, and each of
the bench's devices has its own topic (gasguard/v1/SITE/DEVICE/events|state); a process per
device is out of the question at 100,000. Why not paho: ~20-40 us of Python per message. Here
`encode()` frames each message once, ahead of the run (MQTT 3.1.1, QoS 1 as the gateway
publishes, packet ids assigned in turn), and the sender only hands ranges of one buffer to the
kernel. A reader thread counts the broker's PUBACKs (4 bytes each: the only packet it sends
after CONNACK) to keep at most WINDOW unacknowledged, below the 65,535 packet ids, and to know
when everything sent is at the broker.

    python -m gasguard.tools.bench.mqtt_flood PORT PACKETS OFFSETS [--rate N] [--ticks FILE]

--rate paces to N messages a second in 10 ms ticks and writes each tick's send time (unix
seconds, one line per tick: 'time first_index'); without it, as fast as the broker takes them.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from array import array
from pathlib import Path

WINDOW = 30_000  # unacknowledged messages at most: packet ids must not be reused in flight
TICK_S = 0.01


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    # protocol "MQTT" level 4, clean session, keepalive 0 (off: the sender may sit in sleep)
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + _length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int, retain: bool = False) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + payload
    return bytes((0x33 if retain else 0x32,)) + _length(len(body)) + body


def encode(messages, packets: Path, offsets: Path, retain: bool = False) -> int:
    """Write (topic, payload) or (topic, payload, retain) as framed QoS 1 PUBLISH packets and
    their start offsets; returns how many."""
    starts = array("Q")
    pos = 0
    with open(packets, "wb") as f:
        for n, (topic, payload, *flag) in enumerate(messages):
            p = publish_packet(topic, payload, n % 65535 + 1, flag[0] if flag else retain)
            starts.append(pos)
            f.write(p)
            pos += len(p)
    starts.append(pos)
    with open(offsets, "wb") as f:
        starts.tofile(f)
    return len(starts) - 1


class Acks(threading.Thread):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock, self.bytes, self.closed = sock, 0, False
        self.more = threading.Condition()

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:  # closed under us: the sender is done with it
                data = b""
            with self.more:
                if not data:
                    self.closed = True
                else:
                    self.bytes += len(data)
                self.more.notify_all()
            if not data:
                return

    def count(self) -> int:
        return max(0, self.bytes // 4 - 1)  # CONNACK first, then one PUBACK a message

    def wait(self, at_least: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        with self.more:
            while self.count() < at_least:
                if self.closed:
                    raise RuntimeError("the broker closed the connection")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("PUBACKs: %d of %d" % (self.count(), at_least))
                self.more.wait(left)


def send(port: int, packets: Path, offsets: Path, rate: float | None, ticks: Path | None) -> int:
    buf = memoryview(packets.read_bytes())
    starts = array("Q")
    starts.frombytes(offsets.read_bytes())
    total = len(starts) - 1
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    acks = Acks(sock)
    acks.start()
    sock.sendall(connect_packet("bench-flood-%d" % time.monotonic_ns()))
    sent, log = 0, []
    per_tick = max(1, round(rate * TICK_S)) if rate else 2000
    t0 = time.monotonic()
    while sent < total:
        if rate:
            due = t0 + len(log) * TICK_S
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
        n = min(per_tick, total - sent)
        acks.wait(sent + n - WINDOW)
        if rate:
            log.append("%.6f %d\n" % (time.time(), sent))
        sock.sendall(buf[starts[sent] : starts[sent + n]])
        sent += n
    acks.wait(total)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    if ticks is not None:
        ticks.write_text("".join(log))
    return total


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("port", type=int)
    a.add_argument("packets", type=Path)
    a.add_argument("offsets", type=Path)
    a.add_argument("--rate", type=float)
    a.add_argument("--ticks", type=Path)
    args = a.parse_args()
    t = time.monotonic()
    n = send(args.port, args.packets, args.offsets, args.rate, args.ticks)
    print("%d %.3f" % (n, time.monotonic() - t), flush=True)


if __name__ == "__main__":
    main()
