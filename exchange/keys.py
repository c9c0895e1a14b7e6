"""Key generation: every key is made by `cryptography` or `pyrage`, never by hand."""

from __future__ import annotations

import datetime as dt
import errno
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.crypto.signing import key_id
from exchange.files import replace_private, write_private, write_public

KINDS = ("signing", "age", "ssh")


@dataclass(frozen=True)
class KeyPair:
    """Where a generated key pair was written, and its public identity."""

    private_path: Path
    public_path: Path
    public: str


def generate(
    kind: str,
    path: Path,
    *,
    comment: str = "",
    passphrase: bytes | None = None,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> KeyPair:
    """Write a private key to `path` (0600) and its public half to `path` + '.pub'."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for target in (path, _public_path(path)):
        if target.exists() and not overwrite:
            raise FileExistsError(errno.EEXIST, "key file exists", str(target))
    if kind == "age":
        return _age(path, overwrite=overwrite, now=now or dt.datetime.now(dt.UTC))
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}; choose one of {', '.join(KINDS)}")
    key = Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    # Signing keys are PKCS#8 PEM; SSH client keys use the OpenSSH format ssh and paramiko read.
    fmt = (
        serialization.PrivateFormat.OpenSSH if kind == "ssh" else serialization.PrivateFormat.PKCS8
    )
    private = key.private_bytes(serialization.Encoding.PEM, fmt, encryption)
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    label = comment or key_id(key.public_key())
    public = f"{public_line.decode()} {label}\n"
    _write_private_key(path, private, overwrite)
    public_path = _public_path(path)
    _write_public(public_path, public, overwrite)
    return KeyPair(path, public_path, public.strip())


def _age(path: Path, *, overwrite: bool, now: dt.datetime) -> KeyPair:
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    # The same layout as age-keygen, so the standard `age -d -i FILE` reads it.
    text = (
        f"# created: {now.isoformat(timespec='seconds')}\n# public key: {recipient}\n{identity}\n"
    )
    _write_private_key(path, text.encode(), overwrite)
    public_path = _public_path(path)
    _write_public(public_path, recipient + "\n", overwrite)
    return KeyPair(path, public_path, recipient)


def _public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def _write_private_key(path: Path, data: bytes, overwrite: bool) -> None:
    # Replacing is atomic and 0600 from the first byte; a new key never lands on a link.
    if overwrite:
        replace_private(path, data)
    else:
        write_private(path, data)


def _write_public(path: Path, text: str, overwrite: bool) -> None:
    write_public(path, text.encode("utf-8"), overwrite=overwrite)
