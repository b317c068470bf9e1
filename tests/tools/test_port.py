"""tools/installer/port.py: what is on the other end of a serial port, said in words within a
second (issue 22: the link UART dumped 2 kB of binary and was taken for a board without
MicroPython). The board is the real firmware on a virtual board; the other ends are ptys."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gasguard.tools.device import read_device_config
from gasguard.tools.installer import port
from gasguard.tools.sim.vboard_service import VboardService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"


def timed(path: str) -> tuple[port.Finding, float]:
    t0 = time.monotonic()
    found = port.identify(path)
    return found, time.monotonic() - t0


def plain(text: str) -> bool:
    return all(c.isprintable() for c in text)


def test_the_link_uart_and_the_repl_of_a_running_board():
    cfg, key = read_device_config(EXAMPLE)  # as installed: with its UART link to the gateway
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        time.sleep(1.5)  # no gateway on the link: the board sends a birth every second
        found, took = timed(svc.link_endpoint)
        assert found.kind == port.LINK and took < 1.0, (found, took)
        assert "link UART, not its USB REPL" in found.message and plain(found.message)
        assert found.code == 2
        # the buffered birth was read: the next one comes within the probe's window
        with pytest.raises(port.PortError, match="link UART") as e:
            port.require_repl(svc.link_endpoint)
        assert e.value.code == 2
        found, took = timed(svc.board.repl_path)
        assert found.kind == port.REPL and took < 1.0, (found, took)
        port.require_repl(svc.board.repl_path)  # stopped at the prompt: still a REPL


def _pty_answering(reply: bytes | None):
    """A pty whose far end answers anything written to it with reply (None: never answers)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    stop = threading.Event()

    def far_end() -> None:
        while not stop.is_set():
            try:
                got = os.read(master, 256)
            except OSError:
                return
            if got and reply is not None:
                os.write(master, reply)

    threading.Thread(target=far_end, daemon=True).start()
    return path, lambda: (stop.set(), os.close(slave), os.close(master))


@pytest.mark.parametrize(
    "reply, kind, code, words",
    [
        (None, port.SILENT, 3, "nothing answered"),
        (b"\r\nOK\r\n+CREG: 0,1\r\n", port.OTHER, 2, "bytes of text: 'OK +CREG: 0,1'"),
        (bytes(range(128, 256)) * 4, port.OTHER, 2, "bytes of binary"),
    ],
)
def test_silence_and_other_devices_are_named_not_dumped(reply, kind, code, words):
    path, close = _pty_answering(reply)
    try:
        found, took = timed(path)
    finally:
        close()
    assert found.kind == kind and found.code == code, found
    assert words in found.message and plain(found.message), found.message
    assert took < port.WINDOW_S + 0.1


def test_a_missing_port_is_unreachable(tmp_path):
    found = port.identify(str(tmp_path / "ttyUSB9"))
    assert found.kind == port.UNOPENABLE and found.code == 3
    assert "no such port" in found.message


def test_a_board_caught_booting_is_a_repl_once_its_prompt_comes():
    """The probe's Ctrl-C can land while the firmware boots: it prints why it stopped at once
    and its prompt later (on a loaded machine, after the probe's first second)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)

    def far_end() -> None:
        os.read(master, 256)  # the probe's wake-up
        os.write(master, b"STOPPED at boot from the console: valve closed\r\n")
        time.sleep(port.WINDOW_S + 0.5)
        os.write(master, b"MicroPython v1.28.0 on 2026-01-01; linux\r\n>>> ")

    threading.Thread(target=far_end, daemon=True).start()
    try:
        found, took = timed(path)
    finally:
        os.close(slave)
        os.close(master)
    assert found.kind == port.REPL, found
    assert took < port.WINDOW_S + port.TEXT_GRACE_S + 0.2, took
