"""What is on the other end of a serial port, within a second, before flash or commission talk to
it: a MicroPython REPL (what they need), the board's GasGuard link UART, silence, or something
else. Nothing read from the port reaches the terminal: a finding describes it in words.

The probe sends Ctrl-C (twice, then Ctrl-B to leave a raw REPL a crashed tool left behind): a
REPL answers with its prompt at once, and a running firmware stops there with its valve closed,
as flash and commission stop it anyway; the caller restarts the board. On the link UART these
bytes are line noise the board's frame decoder drops, and the board keeps sending its frames
(a birth every second until a gateway answers), which is how the link is recognised: a
0x00-delimited COBS frame whose header and CRC-32 are GasGuard's (no key is needed for that).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gasguard.protocol import frame
from gasguard.protocol.cobs import COBSError
from gasguard.protocol.cobs import decode as cobs_decode
from gasguard.tools import exitcodes

REPL = "repl"
LINK = "link"
SILENT = "silent"
OTHER = "other"
UNOPENABLE = "unopenable"

BAUD = 115200  # the ESP32's USB REPL, and the virtual board's
# a REPL answers in tens of ms; a link without a gateway sends a birth every second, and one
# whole frame (both delimiters) must be seen: a little over a second for silence to be silence
WINDOW_S = 1.1
WAKE = b"\r\x03\x03\x02"  # Ctrl-C twice (a running program), Ctrl-B (out of a raw REPL)
PROMPTS = (b">>> ", b"raw REPL", b"MicroPython v")
# the firmware's own console lines: a board whose prompt is still to come gets TEXT_GRACE_S more
FIRMWARE_WORDS = (b"STOPPED", b"GASGUARD", b"BOOT FAILED", b"FATAL", b"CONFIG ERROR")
TEXT_GRACE_S = 2.0


class PortError(Exception):
    """The port is not a MicroPython REPL: a message for the installer and an exit code (2: a
    wrong port, fix the command; 3: nothing reachable, fix the cable or close the other
    program)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Finding:
    kind: str  # REPL, LINK, SILENT, OTHER or UNOPENABLE
    message: str  # for the installer; "" for a REPL
    code: int  # the exit code a command refusing this port uses (0 for a REPL)


def has_link_frame(data: bytes) -> bool:
    """Whether data holds one whole GasGuard link frame (a valid header and CRC-32)."""
    for seg in data.split(b"\x00")[1:-1]:  # whole segments only: both delimiters seen
        if not seg:
            continue
        try:
            raw = cobs_decode(seg)
        except COBSError:
            continue
        # with no key, a frame whose CRC, version and header are right reads "unknown device"
        got = frame.parse(raw, lambda _device: None)
        if isinstance(got, frame.Dropped) and got.reason == frame.UNKNOWN:
            return True
    return False


def describe(data: bytes) -> str:
    """A few words about bytes that are neither a REPL nor the link: never the bytes raw."""
    if not _is_text(data):
        return "%d bytes of binary at %d baud" % (len(data), BAUD)
    text = " ".join(data.decode("ascii", "replace").split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return "%d bytes of text: %r" % (len(data), text[:60] + ("..." if len(text) > 60 else ""))


def classify(port: str, data: bytes) -> Finding:
    # a prompt, or our firmware's own console lines (the link UART carries frames, never text):
    # a board whose prompt is slow to come after it stopped is still its USB REPL, and
    # mpremote's own Ctrl-C and raw-REPL wait take it from there
    if any(p in data for p in PROMPTS) or any(m in data for m in FIRMWARE_WORDS):
        return Finding(REPL, "", exitcodes.OK)
    if has_link_frame(data):
        return Finding(
            LINK,
            "%s is the board's link UART, not its USB REPL (it sends GasGuard link frames): "
            "connect to the board's USB port instead" % port,
            exitcodes.BAD_INPUT,
        )
    if not data:
        return Finding(
            SILENT,
            "nothing answered on %s within %.1f s, not even to Ctrl-C: is the board powered, "
            "and is this its USB port? (a MicroPython REPL answers at once)" % (port, WINDOW_S),
            exitcodes.UNREACHABLE,
        )
    return Finding(
        OTHER,
        "%s answers, but not as a MicroPython REPL (%s): is this the board's USB port?"
        % (port, describe(data)),
        exitcodes.BAD_INPUT,
    )


def _open_error(port: str, e: Exception) -> Finding:
    text = str(e)
    if "lock" in text or "busy" in text.lower() or "Errno 16" in text:
        msg = (
            "%s is in use by another program (a serial monitor, mpremote or the gateway): "
            "close it and try again" % port
        )
    elif "Errno 2" in text:
        msg = "%s: no such port: is the board plugged in?" % port
    elif "Errno 13" in text:
        msg = "%s: no permission to open it (on Linux, join the dialout group)" % port
    else:
        msg = "cannot open %s (%s): is the board plugged in, and is this its USB port?" % (
            port,
            text,
        )
    return Finding(UNOPENABLE, msg, exitcodes.UNREACHABLE)


def identify(port: str, window_s: float = WINDOW_S) -> Finding:
    """Open port, wake a REPL and listen for at most window_s: what is on the other end."""
    import serial

    try:
        s = serial.Serial(port, BAUD, timeout=0.02, exclusive=True)
    except (serial.SerialException, OSError) as e:
        return _open_error(port, e)
    data = b""
    try:
        s.write(WAKE)
        data = _listen(s, data, window_s)
        if not _done(data) and any(m in data for m in FIRMWARE_WORDS):
            # our firmware's console but no prompt yet: a board caught booting prints why it
            # stopped ("STOPPED at boot ...") before its prompt, later on a loaded machine
            s.write(b"\r")
            data = _listen(s, data, TEXT_GRACE_S)
    except (serial.SerialException, OSError):  # opened, then gone: the cable, mid-probe
        return Finding(
            UNOPENABLE,
            "%s went away while it was being probed (the cable pulled, or the board reset from "
            "elsewhere): reconnect it; if it answered before it went, its firmware is stopped: "
            "reset or power-cycle the board" % port,
            exitcodes.UNREACHABLE,
        )
    finally:
        try:
            s.close()
        except (serial.SerialException, OSError):
            pass
    return classify(port, data)


def _done(data: bytes) -> bool:
    return any(p in data for p in PROMPTS) or has_link_frame(data)


def _is_text(data: bytes) -> bool:
    return sum(32 <= b < 127 or b in b"\r\n\t" for b in data) >= 0.9 * len(data)


def _listen(s: Any, data: bytes, window_s: float) -> bytes:
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        data += s.read(4096)
        if _done(data):
            break
    return data


def require_repl(port: str) -> None:
    """For flash and commission: raises PortError unless a MicroPython REPL is on port."""
    found = identify(port)
    if found.kind != REPL:
        raise PortError(found.message, found.code)
