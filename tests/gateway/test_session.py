"""The gateway's side of the link session (protocol v2): the handshake, the replay window anchored
at the confirming birth, instance ids, and what a board sees when the gateway lost everything.
In process: a LinkSession and synthetic boards passing bytes to each other."""

from __future__ import annotations

from gasguard.gateway.session import (
    CHALLENGE_EVERY_S,
    LinkSession,
    ack_frames,
)
from gasguard.protocol import messages
from gasguard.tools.sim.syndevice import SynDevice

KEY = bytes(range(16))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def gateway(boot: int = 1, clock: Clock | None = None) -> LinkSession:
    return LinkSession({"kitchen-1": KEY}, boot, clock=clock or Clock())


def exchange(gw: LinkSession, dev: SynDevice, data: bytes, ack: bool = True) -> list:
    """Bytes from the board to the gateway, and everything that follows, until both are quiet:
    the gateway acknowledges every event at once (as if durable)."""
    got = []
    while data:
        msgs = gw.feed(data)
        got += msgs
        back = gw.take_replies()
        ids = [tuple(m.body["id"]) for m in msgs if m.mtype == messages.EVENT]
        if ack and ids:
            back += b"".join(ack_frames(gw, dev.device, ids))
        dev.feed(back)
        data = dev.take_out()
    return got


def linked(gw: LinkSession, dev: SynDevice) -> list:
    got = exchange(gw, dev, dev.birth())
    assert dev.linked
    return got


def test_the_handshake_confirms_both_sessions_and_events_carry_the_birth_instance():
    gw, dev = gateway(), SynDevice("kitchen-1", KEY, boot=7, inst="5f3a9c1e0b7d4a26")
    got = linked(gw, dev)
    # birth {nonce} -> time {nonce, gn}; birth {gn} confirms the device session
    assert [m.name for m in got] == ["birth"]
    assert got[0].body["gn"] and "nonce" not in got[0].body
    st = gw.devices["kitchen-1"]
    assert (st.boot, st.inst) == (7, "5f3a9c1e0b7d4a26")
    got = exchange(gw, dev, dev.event("alarm.high", det=0, lel=62.5)[1])
    assert [m.name for m in got] == ["event"] and dev.acked == {(7, 1)}
    assert gw.counts["challenge"] == 1 and gw.counts["ok"] == 2


def test_a_recorded_session_is_refused_after_a_gateway_restart():
    """Issue 20 item 4: recorded frames were accepted again after a restart (retained state
    rewound to "valve open, no alarm", a fake device.online)."""
    gw, dev = gateway(), SynDevice("kitchen-1", KEY)
    recorded = []
    gw_feed = gw.feed

    def tap(data: bytes):
        recorded.append(bytes(data))
        return gw_feed(data)

    gw.feed = tap  # type: ignore[method-assign]
    linked(gw, dev)
    exchange(gw, dev, dev.heartbeat(valve="open", alarm="none"))
    exchange(gw, dev, dev.event("alarm.clear", det=0, lel=0.0)[1])
    for boot in (1, 2):  # the restarted gateway, whatever boot it believes it is
        gw2 = gateway(boot)
        accepted = [m for data in recorded for m in gw2.feed(data)]
        assert accepted == []
        assert gw2.counts["ok"] == 0
        assert gw2.counts["challenge"] + gw2.counts["session"] == len(recorded)


def test_a_frame_from_before_the_confirming_birth_is_refused_in_the_session():
    """Frames of the same boot sent before the session was confirmed (recorded from an earlier
    gateway session, say) are older than its anchor: never accepted in it."""
    gw, dev = gateway(), SynDevice("kitchen-1", KEY)
    old = dev.heartbeat(valve="open", alarm="none")  # signed and seen on the wire, not delivered
    linked(gw, dev)
    assert gw.feed(old) == [] and gw.counts["replay"] == 1
    assert len(gw.feed(dev.heartbeat(valve="closed", alarm="high"))) == 1


def test_a_replay_inside_the_session_is_refused_and_a_birth_of_the_session_is_not_a_new_one():
    gw, dev = gateway(), SynDevice("kitchen-1", KEY)
    linked(gw, dev)
    f = dev.event("alarm.high", det=0, lel=70.0)[1]
    assert len(gw.feed(f)) == 1
    assert gw.feed(f) == [] and gw.counts["replay"] == 1
    # the link came up again: a birth with a nonce in the same boot is answered, not refused,
    # and the board re-sends its unacknowledged event at once
    dev.link_down()
    got = exchange(gw, dev, dev.birth())
    assert [m.name for m in got] == ["birth", "event"] and dev.linked and dev.unacked == {}
    assert gw.devices["kitchen-1"].boot == 1


def test_frames_outside_a_session_are_challenged_at_most_every_half_second():
    clock = Clock()
    gw, dev = gateway(clock=clock), SynDevice("kitchen-1", KEY)
    for _ in range(10):
        assert gw.feed(dev.heartbeat()) == []
    assert gw.counts["session"] == 10
    assert gw.take_replies().count(b"\x00\x00") <= 1  # one time frame
    clock.t += CHALLENGE_EVERY_S + 0.01
    gw.feed(dev.heartbeat())
    replies = gw.take_replies()
    assert replies
    dev.feed(replies)  # the challenge: the board answers with a birth echoing gn
    got = exchange(gw, dev, dev.take_out())
    assert [m.name for m in got] == ["birth"] and gw.devices["kitchen-1"].boot == 1


def test_a_gateway_that_lost_its_state_gets_the_boards_events_without_a_stall():
    """Issue 20 item 4: after the outbox was lost the gateway booted as 1 again, boards refused
    its frames and their events stopped arriving (4 of 8, pending stuck at 8)."""
    gw, dev = gateway(boot=5), SynDevice("kitchen-1", KEY)
    linked(gw, dev)
    for i in range(4):
        exchange(gw, dev, dev.event("alarm.low", det=0, lel=20.0 + i)[1])
    assert len(dev.acked) == 4
    # the gateway loses everything and starts as boot 1: the board's next events are dropped
    # as "session" and challenged; its answer (a birth) opens a session and it re-sends
    gw = gateway(boot=1)
    pending = [dev.event("alarm.high", det=0, lel=60.0 + i)[1] for i in range(4)]
    got = []
    for f in pending:
        got += exchange(gw, dev, f)
    assert gw.counts["session"] >= 1
    assert {tuple(m.body["id"]) for m in got if m.name == "event"} == {(1, i) for i in range(5, 9)}
    assert dev.unacked == {} and len(dev.acked) == 8


def test_a_birth_echoing_a_stale_or_foreign_challenge_is_not_acted_on():
    clock = Clock()
    gw, dev = gateway(clock=clock), SynDevice("kitchen-1", KEY)
    gw.feed(dev.birth())
    gn = messages.decode_body(messages.TIME, _bodies(gw.take_replies())[0])["gn"]
    assert gw.feed(dev.birth(gn=b"\x01" * 8)) == []  # not ours
    clock.t += 31  # the challenge expired
    assert gw.feed(dev.birth(gn=gn)) == []
    assert gw.devices["kitchen-1"].boot == -1


def test_acks_from_outside_the_gateway_session_do_not_clear_a_boards_events():
    gw, dev = gateway(), SynDevice("kitchen-1", KEY)
    linked(gw, dev)
    eid, f = dev.event("alarm.high", det=0, lel=70.0)
    other = gateway(boot=9)  # another gateway boot, same key: never confirmed by this board
    dev.feed(other.ack("kitchen-1", [eid]))
    assert eid in dev.unacked
    exchange(gw, dev, f)
    assert eid in dev.acked


def _bodies(wire: bytes) -> list[bytes]:
    from gasguard.protocol import frame

    dec = frame.FrameDecoder(lambda d: __import__("gasguard.protocol.auth").protocol.auth.Signer(
        KEY
    ))
    return [r.body for r in dec.feed(wire) if isinstance(r, frame.Frame)]
