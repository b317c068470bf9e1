"""The gateway's own identity: a random instance id (made once) and a boot counter, in
`identity.json` in the state directory, apart from the outbox.

It is written atomically (a temporary file, fsync, rename, fsync of the directory) before the
gateway uses the new boot, so a crash never leaves a half-written file, and it survives the loss
of the outbox. It is for diagnosis only (status, logs, the boot in the gateway's frame headers):
no board relies on it. Replay protection does not need it either: every session, both ways, starts
from a fresh random challenge (docs/protocol.md, "Sessions"), so a recorded frame is never accepted
after a restart, a crash or the loss of the whole state directory, and a counter that rolled back
would lock no board out. A damaged file is moved aside and a new identity begun.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gasguard.gateway")

FILE = "identity.json"


@dataclass(frozen=True)
class Identity:
    instance: str  # 16 lowercase hex characters, 64 random bits
    boot: int


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read(path: Path) -> Identity | None:
    try:
        d = json.loads(path.read_bytes())
        inst, boot = d["instance"], d["boot"]
        if (
            isinstance(inst, str) and len(inst) == 16 and not inst.strip("0123456789abcdef")
            and type(boot) is int and 0 <= boot < 1 << 32
        ):  # fmt: skip
            return Identity(inst, boot)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    log.error("gateway identity damaged: moved aside, a new one begins",
              extra={"file": str(aside)})
    return None


def next_boot(state_dir: Path) -> Identity:
    """Read the identity, count this boot and write it back (durably) before returning it.
    OSError (a read-only or missing directory) is the caller's to report, with the path."""
    path = Path(state_dir) / FILE
    old = _read(path)
    if old is None:
        new = Identity(secrets.token_hex(8), 1)
    else:  # the boot counter wraps rather than stop the gateway; it is only for diagnosis
        new = Identity(old.instance, old.boot % 0xFFFFFFFF + 1)
    _write_atomic(path, json.dumps({"instance": new.instance, "boot": new.boot}).encode())
    return new
