"""The firmware's gateway link against a CPython peer that decodes independently: its own COBS,
zlib's CRC-32, Python's hmac and cbor2 for the bodies. Birth, heartbeats and every event arrive;
unacknowledged events are re-sent, also after a power cut; acknowledged ones never again."""

from __future__ import annotations

import copy
import hashlib
import hmac
import socket
import struct
import threading
import time
import zlib

import cbor2
import pytest

from gasguard.protocol import auth, cbor, frame, messages

from .conftest import BASE_CONFIG, KEY, open_valve


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        out += data[i + 1 : i + code]
        i += code
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


class Peer:
    """A stand-in gateway: accepts the board's TCP link, decodes every frame, acks on demand.
    With handshake on, it answers every birth that asks (carries a nonce) with a time frame
    echoing it, as the gateway does: the board then trusts this session (docs/protocol.md)."""

    def __init__(
        self, port: int = 0, handshake: bool = True, boot: int = 1, auto_ack: bool = False
    ):
        self.srv = socket.create_server(("127.0.0.1", port))
        self.port = self.srv.getsockname()[1]
        self.frames: list[tuple[int, int, int, dict]] = []  # (type, boot, seq, body)
        self.bad = 0
        self.conn: socket.socket | None = None
        self.cv = threading.Condition()
        self.seq = 0
        self.boot = boot  # the stand-in gateway's boot, in the header of what it sends
        self.handshake = handshake
        self.auto_ack = auto_ack  # acknowledge every event as it arrives (a gateway keeping up)
        self.send_lock = threading.Lock()
        self.signer = auth.Signer(KEY)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conn = c
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c: socket.socket):
        buf = b""
        while True:
            try:
                data = c.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\x00" in buf:
                seg, buf = buf.split(b"\x00", 1)
                if seg:
                    try:
                        self._frame(cobs_decode(seg))
                    except OSError:  # the test closed the connection while we answered
                        return

    def _frame(self, raw: bytes):
        body_crc = raw[:-4]
        if zlib.crc32(body_crc) != struct.unpack(">I", raw[-4:])[0]:
            self.bad += 1
            return
        ver, mtype, boot, seq, idlen = struct.unpack(">BBIIB", raw[:11])
        head_end = 11 + idlen
        tag = raw[-20:-4]
        want = hmac.new(KEY, raw[:-20], hashlib.sha256).digest()[:16]
        if ver != 2 or not hmac.compare_digest(tag, want):
            self.bad += 1
            return
        body = cbor2.loads(raw[head_end:-20])
        messages.validate(mtype, body)  # every body the device sends is in the catalogue
        with self.cv:
            self.frames.append((mtype, boot, seq, body))
            self.cv.notify_all()
        if self.handshake and mtype == messages.BIRTH and "nonce" in body:
            self.send(messages.TIME, messages.time_sync(1764000000, boot, body["nonce"]))
        if self.auto_ack and mtype == messages.EVENT:
            self.send(messages.ACK, messages.ack([body["id"]]))

    def send(self, mtype: int, body: dict, check: bool = True):
        """A correctly signed frame; check=False sends a body the catalogue would refuse."""
        with self.send_lock:  # the reader thread answers births meanwhile: one seq each
            self._send(mtype, body, check)

    def _send(self, mtype: int, body: dict, check: bool):
        self.seq += 1
        assert self.conn is not None
        if check:
            data = messages.pack(self.signer, mtype, self.boot, self.seq, "kitchen-1", body)
        else:
            data = frame.encode(
                self.signer, mtype, self.boot, self.seq, "kitchen-1", cbor.dumps(body)
            )
        self.last = data  # what went out last, for a test to play back
        self.conn.sendall(data)

    def wait(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                hit = [f for f in self.frames if pred(f)]
                if hit:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "no such frame; got %r"
                        % [(f[0], f[3].get("kind")) for f in self.frames[-10:]]
                    )
                self.cv.wait(left)

    def events(self) -> list[dict]:
        with self.cv:
            return [f[3] for f in self.frames if f[0] == messages.EVENT]

    def close(self):
        self.srv.close()
        if self.conn:
            self.conn.close()


def _kind(kind):
    return lambda f: f[0] == messages.EVENT and f[3]["kind"] == kind


def test_link_birth_heartbeats_events_resend_and_ack(make_board, detectors):
    peer = Peer()
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["heartbeat_s"] = 1
    cfg["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": peer.port, "resend_ms": 600}
    b = make_board(cfg).start()
    try:
        (birth,) = peer.wait(lambda f: f[0] == messages.BIRTH)[:1]
        assert birth[3]["dev"] == "kitchen-1" and birth[3]["valve"] == "nc"
        assert len(birth[3]["dets"]) == 2
        boot1 = birth[1]
        assert len(birth[3]["inst"]) == 16 and len(birth[3]["nonce"]) == 8
        hb = peer.wait(lambda f: f[0] == messages.HEARTBEAT)[0][3]
        assert hb["valve"] == "closed" and len(hb["dets"]) == 2 and hb["lost"] == 0
        # the handshake's time frame synchronised the clock: events carry it
        open_valve(b)
        detectors[1].set(lel=60.0)
        b.wait_output("valve", 0, 3)
        for kind in ("boot", "reset", "alarm.high", "valve.closed"):
            peer.wait(_kind(kind))
        high = peer.wait(_kind("alarm.high"))[0][3]
        assert high["lel"] == 60.0 and high["det"] == 0
        assert high["time"] >= 1764000000
        # ack boot and reset only; the alarm events keep coming back until acknowledged
        acked = [e["id"] for e in peer.events() if e["kind"] in ("boot", "reset")]
        peer.send(messages.ACK, messages.ack(acked))
        n_high = len(peer.wait(_kind("alarm.high")))
        time.sleep(1.5)
        assert len(peer.wait(_kind("alarm.high"))) > n_high  # re-sent, same id
        assert len({tuple(e["id"]) for e in peer.events() if e["kind"] == "alarm.high"}) == 1
        count_acked = {tuple(i): sum(1 for e in peer.events() if e["id"] == i) for i in acked}

        # power cut: after the restart the unacknowledged events come again, the acked never
        b.power_cycle()
        peer.wait(lambda f: f[0] == messages.BIRTH and f[1] == boot1 + 1, 15)
        mark = len(peer.events())
        peer.wait(
            lambda f: (
                f[0] == messages.EVENT
                and f[3]["kind"] == "alarm.high"
                and f[3]["id"][0] == boot1
                and len(peer.events()) > mark
            ),
            10,
        )
        time.sleep(1.0)
        for i, n in count_acked.items():
            assert sum(1 for e in peer.events() if tuple(e["id"]) == i) == n, i
        # now ack everything the board has sent; nothing is sent twice after that
        ids = sorted({tuple(e["id"]) for e in peer.events()})
        for k in range(0, len(ids), 16):
            peer.send(messages.ACK, messages.ack(ids[k : k + 16]))
        time.sleep(0.5)
        settled = len(peer.events())
        time.sleep(2.0)
        again = [e for e in peer.events()[settled:] if tuple(e["id"]) in set(ids)]
        assert again == []
        assert peer.bad == 0
        assert len(peer.wait(lambda f: f[0] == messages.HEARTBEAT)) >= 3
    finally:
        peer.close()


def test_gateway_down_never_delays_the_valve_and_events_arrive_later(make_board, detectors):
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()  # nobody listens there: the gateway is down
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": free, "resend_ms": 500}
    b = make_board(cfg).start()
    open_valve(b)
    t0 = detectors[1].set(lel=70.0)
    t1 = b.wait_output("valve", 0, 3)
    assert t1 - t0 < 1.0
    b.wait_line("valve.closed", 3)
    # the gateway comes back on the same port: everything logged meanwhile is delivered
    peer = Peer(free)
    try:
        for kind in ("boot", "reset", "alarm.high", "valve.closed"):
            peer.wait(_kind(kind), 20)
    finally:
        peer.close()


def start_linked(make_board):
    """A board linked over TCP to a fresh Peer, returned once its birth has arrived and it shows
    healthy (green)."""
    peer = Peer()
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": peer.port}
    b = make_board(cfg).start()
    try:
        peer.wait(lambda f: f[0] == messages.BIRTH)
        b.wait_output("green", 1, 5)
    except BaseException:
        peer.close()
        raise
    return peer, b


def test_harmless_commands_are_answered_and_cannot_open_the_valve(make_board, detectors):
    peer, b = start_linked(make_board)
    try:
        peer.send(messages.COMMAND, messages.command("identify"))
        reply = peer.wait(lambda f: f[0] == messages.REPLY)[0][3]
        assert reply["cmd"] == "identify" and reply["ok"] and reply["data"]["dev"] == "kitchen-1"
        b.wait_output("green", 0, 2)  # flashing: "this is the board you asked for"
        peer.send(messages.COMMAND, messages.command("config_digest"))
        reply = peer.wait(lambda f: f[0] == messages.REPLY and f[3]["cmd"] == "config_digest")
        birth = peer.wait(lambda f: f[0] == messages.BIRTH)[0][3]
        assert reply[0][3]["data"]["cfg"] == birth["cfg"]
        # every command the catalogue has, while the valve is closed: it stays closed
        for cmd in messages.COMMANDS:
            peer.send(messages.COMMAND, messages.command(cmd))
        time.sleep(1.0)
        assert b.outputs["valve"] == 0
        assert not [e for e in b.events() if e.split()[3] == "reset"]
        # a forged command (wrong key) is dropped without an answer
        n = len(peer.wait(lambda f: f[0] == messages.REPLY))
        assert peer.conn is not None
        peer.conn.sendall(
            messages.pack(
                auth.Signer(b"x" * 16),
                messages.COMMAND,
                1,
                999,
                "kitchen-1",
                messages.command("selftest"),
            )
        )
        time.sleep(0.5)
        assert len(peer.wait(lambda f: f[0] == messages.REPLY)) == n
    finally:
        peer.close()


def _linked_board(make_board, peer, **link):
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["heartbeat_s"] = 1
    cfg["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": peer.port, **link}
    return make_board(cfg).start()


def test_the_board_sends_only_births_until_a_time_frame_echoes_its_nonce(make_board):
    peer = Peer(handshake=False)
    try:
        b = _linked_board(make_board, peer)
        peer.wait(lambda f: f[0] == messages.BIRTH)
        time.sleep(2.5)
        assert {f[0] for f in peer.frames} == {messages.BIRTH}  # no health, no events yet
        births = [f[3] for f in peer.frames]
        assert len(births) >= 2 and all(len(x["nonce"]) == 8 for x in births)
        boot = peer.frames[0][1]
        # a time frame that does not echo the nonce (a recording, a stranger): nothing changes
        peer.send(messages.TIME, messages.time_sync(1764000000, boot, bytes(8)))
        time.sleep(1.5)
        assert {f[0] for f in peer.frames} == {messages.BIRTH}
        # the answer to the challenge opens the session: health and the boot event follow
        peer.send(messages.TIME, messages.time_sync(1764000000, boot, births[-1]["nonce"]))
        hb = peer.wait(lambda f: f[0] == messages.HEARTBEAT)[0][3]
        assert hb["time"] >= 1764000000  # the clock came with the session
        peer.wait(_kind("boot"))
        b.wait_line("GASGUARD RUNNING", 5)
    finally:
        peer.close()


@pytest.mark.parametrize("old_boot", [57, 1])
def test_a_gateway_restarted_with_its_state_lost_gets_the_board_delivering_again(
    make_board, detectors, old_boot
):
    """The gateway comes back on the same connection (a serial line) with boot 1 (its state
    directory was lost), before or even after the same boot 1 (it never restarted before):
    its frame numbers start again too. It challenges the board, the board opens a session with
    it, and the events it acknowledges are never sent again."""
    peer = Peer(boot=old_boot)
    try:
        b = _linked_board(make_board, peer, resend_ms=600)
        peer.wait(_kind("boot"))
        open_valve(b)
        peer.wait(_kind("reset"))
        acked = [e["id"] for e in peer.events()]
        peer.send(messages.ACK, messages.ack(acked))
        birth = peer.wait(lambda f: f[0] == messages.BIRTH)[0]
        time.sleep(0.5)
        sent_before = len([e for e in peer.events() if e["id"] in acked])
        # the restarted gateway knows no session: its first frame challenges the board
        peer.boot, peer.seq = 1, 0
        challenge = bytes.fromhex("0f1e2d3c4b5a6978")
        mark = len(peer.frames)
        peer.send(messages.TIME, messages.time_sync(1764000100, birth[1], gn=challenge))
        answer = peer.wait(
            lambda f: f[0] == messages.BIRTH and f[3].get("gn") == challenge and "nonce" in f[3]
        )
        assert answer and len(peer.frames) > mark
        time.sleep(0.5)  # (the peer answered the nonce: the session with boot 1 is open)
        detectors[1].set(lel=60.0)
        b.wait_output("valve", 0, 3)
        high = peer.wait(_kind("alarm.high"), 5)[0][3]
        peer.send(messages.ACK, messages.ack([high["id"]]))
        time.sleep(0.3)
        n = len([e for e in peer.events() if e["id"] == high["id"]])
        time.sleep(1.5)  # more than two resend periods: an acknowledged event stays quiet
        assert len([e for e in peer.events() if e["id"] == high["id"]]) == n
        assert len([e for e in peer.events() if e["id"] in acked]) == sent_before
    finally:
        peer.close()


def test_events_the_full_flash_log_drops_unacknowledged_are_reported(make_board, tmp_path):
    """The gateway was unreachable for 511 events: the log's oldest segment goes with 64 events
    nobody acknowledged. The board says so, in an event and in every heartbeat."""
    import subprocess

    from gasguard.tools.sim import micropython

    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()  # the gateway is down
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["heartbeat_s"] = 1
    cfg["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": free}
    b = make_board(cfg)
    data = b.flash / "data"
    fill = (
        "from gasguard.eventlog import EventLog\n"
        "log = EventLog(%r).open()\n"
        "for s in range(511):\n"
        "    log.append({'id': [1, s + 1], 'kind': 'alarm.low', 'up': s, 'det': 0, 'lel': 21.0})\n"
    ) % str(data)
    data.mkdir(parents=True)
    (data / "bootcount").write_text("1")
    subprocess.run(
        [micropython.find_micropython(), "-X", "heapsize=" + micropython.HEAPSIZE, "-c", fill],
        cwd=b.flash, env={"MICROPYPATH": str(b.flash / "lib")}, check=True, timeout=120,
    )  # fmt: skip
    b.start()
    b.wait_line("GASGUARD RUNNING", 10)
    open_valve(b)  # the reset is the 513th record: the first segment goes, unacknowledged
    line = b.wait_line("events.lost", 5)
    assert "unacknowledged events dropped" in line
    peer = Peer(free, auto_ack=True)
    try:
        lost = peer.wait(_kind("events.lost"), 30)[0][3]
        assert lost["n"] == 64
        hb = peer.wait(lambda f: f[0] == messages.HEARTBEAT, 10)[0][3]
        assert hb["lost"] == 64
    finally:
        peer.close()


def test_a_flash_erase_gives_the_board_a_new_instance_so_its_event_ids_never_repeat(make_board):
    """After erase-flash (or on a replaced board) the boot counter starts at 1 again, so the
    event ids [boot, seq] repeat: the instance id in the birth tells the two lives apart."""
    import shutil

    peer = Peer()
    try:
        b = _linked_board(make_board, peer)
        first = peer.wait(lambda f: f[0] == messages.BIRTH)[0]
        boot_event = peer.wait(_kind("boot"))[0][3]
        b.kill()
        shutil.rmtree(b.flash / "data")  # what erase-flash leaves of the board's data
        mark = len(peer.frames)
        b.start()
        again = peer.wait(lambda f: f[0] == messages.BIRTH and peer.frames.index(f) >= mark)[0]
        assert again[1] == first[1] == 1  # the same boot counter ...
        assert again[3]["inst"] != first[3]["inst"]  # ... in another life of the board
        assert peer.wait(lambda f: f[0] == messages.EVENT and peer.frames.index(f) >= mark)
        assert boot_event["id"] == [1, 1]
    finally:
        peer.close()


def test_a_challenge_played_back_inside_the_session_holds_nothing_up(make_board, detectors):
    """A recorded challenge of the board's own session cannot be told from a restarted gateway
    that has its boot number again: the board asks for a new session (a birth a quarter of a
    second at most), keeps its own meanwhile, and its alarms go on arriving."""
    peer = Peer()
    try:
        b = _linked_board(make_board, peer)
        peer.wait(lambda f: f[0] == messages.HEARTBEAT)
        boot = peer.frames[0][1]
        gn = bytes.fromhex("0102030405060708")
        peer.send(messages.TIME, messages.time_sync(1764000000, boot, gn=gn))
        peer.wait(lambda f: f[0] == messages.BIRTH and f[3].get("gn") == gn)
        recorded = peer.last
        time.sleep(0.5)
        open_valve(b)
        n = len([f for f in peer.frames if f[0] == messages.BIRTH])
        t0 = time.monotonic()
        for _ in range(20):  # the same frame again and again: an old seq of this session
            peer.conn.sendall(recorded)
            time.sleep(0.05)
        births = len([f for f in peer.frames if f[0] == messages.BIRTH]) - n
        assert births <= (time.monotonic() - t0) / 0.25 + 1
        t1 = detectors[1].set(lel=60.0)
        peer.wait(_kind("alarm.high"), 3)
        assert time.perf_counter() - t1 < 2.0
    finally:
        peer.close()


@pytest.mark.parametrize("count", ["4294967295", "-6", "garbage", "99999999999999999999"])
def test_a_damaged_boot_counter_begins_a_new_instance_and_says_so(make_board, count):
    """The boot number may only grow within one instance: a counter that cannot be read back as
    written (out of the header's 32 bits, negative, garbage) would repeat or break event ids, so
    the board begins a new instance at boot 1, and a tamper event says why."""
    peer = Peer()
    try:
        b = _linked_board(make_board, peer)
        first = peer.wait(lambda f: f[0] == messages.BIRTH)[0][3]["inst"]
        b.kill()
        (b.flash / "data" / "bootcount").write_text(count)
        mark = len(peer.frames)
        b.start()
        birth = peer.wait(lambda f: f[0] == messages.BIRTH and peer.frames.index(f) >= mark)[0]
        assert birth[1] == 1 and birth[3]["inst"] != first
        tamper = peer.wait(lambda f: f[0] == messages.EVENT and f[3]["kind"] == "tamper")
        assert "a new instance begins" in tamper[-1][3]["detail"]
        b.wait_line("GASGUARD RUNNING", 5)
    finally:
        peer.close()


def test_a_data_directory_that_cannot_be_written_still_runs_the_board(make_board):
    peer = Peer()
    try:
        b = _linked_board(make_board, peer)
        peer.wait(lambda f: f[0] == messages.BIRTH)
        b.kill()
        (b.flash / "data" / "bootcount").unlink()
        (b.flash / "data" / "bootcount").mkdir()  # can be neither read nor replaced
        b.start()
        b.wait_line("GASGUARD RUNNING", 10)
        b.wait_line("data not writable", 5)
        open_valve(b)  # the safety loop runs: a person can reopen once healthy
    finally:
        peer.close()
