"""Nothing remote can open a valve. A correctly signed peer (the gateway, or anyone with the key)
sends the board every message type in the catalogue, every command, messages the catalogue does
not have and bodies that ask outright; the valve stays closed. A person's reset on the panel then
opens it, so the board was in a state where opening was possible all along."""

from __future__ import annotations

import time

from gasguard.protocol import messages

from .test_link import start_linked

DETS = [{"addr": 1, "profile": "generic-x10", "gas": "methane"}]


def test_no_message_or_command_opens_the_valve(make_board, detectors):
    peer, b = start_linked(make_board)
    try:
        time.sleep(1.0)  # every detector answered: healthy, clean air; only a reset is missing
        assert b.outputs["valve"] == 0
        mark = len(b.lines)

        # every message type the catalogue has, well formed and correctly signed
        loop = {"period_ms": 20, "mean_us": 900, "max_us": 2100, "overruns": 0}
        sent = {
            messages.BIRTH: messages.birth(
                "kitchen-1", "0123456789abcdef", "0.1.0", "ab" * 8, "power", "nc", DETS
            ),
            messages.HEARTBEAT: messages.heartbeat(
                5, "open", "none", loop, 60000, 0, [{"state": "ok", "lel": 0.0, "errors": 0}]
            ),
            messages.EVENT: messages.event(1, 1, "reset", 5, valve="open"),
            messages.REPLY: messages.reply("identify", 1, True, {"valve": "open"}),
            messages.ACK: messages.ack([(1, 1), (1, 2)]),
            messages.TIME: messages.time_sync(int(time.time()), 1),
        }
        # (COMMAND: every command, just below)
        assert set(sent) | {messages.COMMAND} == set(messages.TYPE_NAMES), "a type is missing"
        # paced as a gateway sends (a burst of frames is a load question, not this one)
        for mtype, body in sent.items():
            peer.send(mtype, body)
            time.sleep(0.1)
        for cmd in messages.COMMANDS:
            peer.send(messages.COMMAND, messages.command(cmd))
            time.sleep(0.1)
        # and what the catalogue does not have: asked for outright, or an unknown type
        for body in ({"cmd": "open"}, {"cmd": "reset"}, {"cmd": "valve", "state": "open"}):
            peer.send(messages.COMMAND, body, check=False)
            time.sleep(0.1)
        peer.send(0x7F, {"valve": "open"}, check=False)
        time.sleep(0.1)
        peer.send(messages.EVENT, {"id": [1, 9], "kind": "reset", "up": 5}, check=False)

        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            assert b.outputs["valve"] == 0, "a remote message opened the valve"
            time.sleep(0.05)
        assert not [x for x in b.lines[mark:] if x.startswith("EVENT") and " reset " in x]
        # the harmless commands were answered: the link was up and listening all along
        replies = {f[3]["cmd"] for f in peer.frames if f[0] == messages.REPLY}
        assert replies == set(messages.COMMANDS)

        # control: the same board opens for a person at the panel
        b.reset_until_open(hold_s=0.5, wait_s=1.0)
        assert b.outputs["valve"] == 1
    finally:
        peer.close()
