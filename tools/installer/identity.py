"""`gasguard installer keygen`: an installer's signing key and the identity that goes with it.

keygen writes three files into --out: `installer-key.pem` (the Ed25519 private key, mode 0600:
it signs every commissioning record this installer makes; it never leaves the installer's
machine), `installer.pub` (the public key as PEM: what the regulator registers, `gasguard
regulator installer add --public-key`) and `installer.json` (name, company, certificate
number, key_id and public key: what `gasguard commission --installer` reads). None is ever
written over: a second keygen into the same directory is refused, so a key a regulator has
registered cannot be lost by a slip.

`load()` is the boundary `commission` reads both through: the identity file is checked field
by field and the key must be the identity's own (a key swapped in from another installer is
refused), all before the board is touched.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from gasguard.protocol import record
from gasguard.tools import exitcodes

IDENTITY = "installer.json"
KEY = "installer-key.pem"
PUBLIC = "installer.pub"
KIND = "gasguard installer"
MAX_BYTES = 8192  # an identity is a few hundred bytes; a key file less still
FIELDS = {"name": 60, "company": 120, "certificate": 60}
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class IdentityError(ValueError):
    """The identity or key cannot be used (the message says which and why)."""


def _text(value: Any, what: str, longest: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise IdentityError("%s is missing" % what)
    if CONTROL.search(value):
        raise IdentityError("%s has a control character (a newline, a tab, an escape): one "
                            "line, please" % what)  # fmt: skip
    if len(value) > longest:
        raise IdentityError("%s is %d characters: at most %d" % (what, len(value), longest))
    return value.strip()


def identity(name: str, company: str, certificate: str, public_raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": KIND}
    for k, v in (("name", name), ("company", company), ("certificate", certificate)):
        out[k] = _text(v, "--" + k, FIELDS[k])
    out["key_id"] = record.key_id(public_raw)
    out["public_key"] = base64.b64encode(public_raw).decode()
    return out


def public_pem(public_raw: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(public_raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def keygen(out: Path, name: str, company: str, certificate: str) -> tuple[Path, Path]:
    """(private key path, identity path); the public key's PEM beside them."""
    pem, pub = record.new_key()
    ident = identity(name, company, certificate, pub)  # refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    key_path, id_path, pub_path = out / KEY, out / IDENTITY, out / PUBLIC
    for p in (key_path, id_path, pub_path):
        if p.exists() or p.is_symlink():
            raise IdentityError("%s exists: a key is never written over (a regulator may have "
                                "registered it); use another --out" % p)  # fmt: skip
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with open(pub_path, "xb") as f:
        f.write(public_pem(pub))
    with open(id_path, "x", encoding="utf-8") as f:
        f.write(json.dumps(ident, indent=2, ensure_ascii=False) + "\n")
    return key_path, id_path


def _read(path: Path, what: str) -> bytes:
    try:
        if not path.is_file():
            raise IdentityError("%s %s: not a file (make one with gasguard installer keygen)"
                                % (what, path))  # fmt: skip
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise IdentityError("%s %s: cannot read (%s)" % (what, path, e.strerror or e)) from None
    if len(raw) > MAX_BYTES:
        raise IdentityError("%s %s: more than %d bytes, not an installer's %s"
                            % (what, path, MAX_BYTES, what))  # fmt: skip
    return raw


def load(id_path: Path, key_path: Path | None = None) -> tuple[dict[str, Any], Any]:
    """(identity, private key) for signing; the key defaults to installer-key.pem beside the
    identity. IdentityError on anything not fit to sign a legal record with."""
    raw = _read(id_path, "--installer")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise IdentityError("--installer %s: not JSON (give the installer.json that gasguard "
                            "installer keygen wrote)" % id_path) from None  # fmt: skip
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise IdentityError("--installer %s: not an installer identity (give the installer.json "
                            "that gasguard installer keygen wrote)" % id_path)  # fmt: skip
    ident = {k: _text(doc.get(k), "--installer %s: %s" % (id_path, k), n)
             for k, n in FIELDS.items()}  # fmt: skip
    try:
        pub = base64.b64decode(str(doc.get("public_key", "")).encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        pub = b""
    if len(pub) != 32 or doc.get("key_id") != record.key_id(pub):
        raise IdentityError("--installer %s: its public key or key_id is damaged" % id_path)
    key_path = key_path or id_path.with_name(KEY)
    raw_key = _read(key_path, "--key")
    try:
        key = record.load_private(raw_key)
    except record.RecordError as e:
        raise IdentityError("--key %s: %s" % (key_path, e)) from None
    try:
        mode = os.stat(key_path).st_mode
    except OSError:
        mode = 0
    if os.name == "posix" and mode & 0o077:
        # as ssh refuses it: whoever else can read the key can sign records as this installer
        raise IdentityError("--key %s can be read by others (mode %o): chmod 600 %s"
                            % (key_path, mode & 0o777, key_path))  # fmt: skip
    if record.public_raw_of(key) != pub:
        raise IdentityError("--key %s is not the key of %s (%s): sign with your own key"
                            % (key_path, id_path, ident["name"]))  # fmt: skip
    ident["key_id"] = doc["key_id"]
    return ident, key


def main(args: Any) -> int:
    try:
        key_path, id_path = keygen(Path(args.out), args.name, args.company, args.certificate)
    except IdentityError as e:
        print("gasguard installer keygen: %s" % e, file=sys.stderr)
        return exitcodes.BAD_INPUT
    except OSError as e:
        print("gasguard installer keygen: %s: cannot write (%s)" % (args.out, e.strerror or e),
              file=sys.stderr)  # fmt: skip
        return exitcodes.BAD_INPUT
    print("key: %s (keep it to yourself: it signs your commissioning records)" % key_path)
    print("public key: %s (give it to the regulator to register: gasguard regulator installer "
          "add --public-key %s)" % (id_path.with_name(PUBLIC), id_path.with_name(PUBLIC)))
    print("identity: %s (gasguard commission --installer %s)" % (id_path, id_path))
    return exitcodes.OK


def register(sub: Any) -> None:
    inst = sub.add_parser("installer", help="the installer's signing key")
    isub = inst.add_subparsers(dest="installer_command", required=True)
    k = isub.add_parser(
        "keygen",
        help="make an Ed25519 signing key and the identity the regulator registers",
        epilog="here:\n  2  a field missing, too long or not one line; --out holds a key "
        "already,\n     or cannot be written",
    )
    k.add_argument("--name", required=True, help="your name as on your certificate")
    k.add_argument("--company", required=True, help="the installing company")
    k.add_argument("--certificate", required=True, help="your installer certificate number")
    k.add_argument("--out", default=".", help="directory for installer-key.pem, installer.pub "
                   "and installer.json (default: here)")  # fmt: skip
    k.set_defaults(run=main)
