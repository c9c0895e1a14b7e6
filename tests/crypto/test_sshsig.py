"""OpenSSH signatures (SSHSIG) of manifests, checked against the real `ssh-keygen`."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.crypto import sshsig
from exchange.errors import CryptoError

MESSAGE = b'{\n  "drop_id": "x-0123456789abcdef"\n}\n'

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="OpenSSH's ssh-keygen is not installed"
)
real_program = pytest.mark.integration  # runs the real ssh-keygen


def ssh_keygen(*args: str, message: bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh-keygen", "-Y", *args], input=message, cwd=cwd, capture_output=True, timeout=30
    )


def allowed(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(sshsig.allowed_signers_line(key.public_key()) + "\n")
    return path


def verify_with_ssh_keygen(
    tmp_path: Path, key: Ed25519PrivateKey, armored: bytes, message: bytes = MESSAGE
) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "m.sshsig").write_bytes(armored)
    return ssh_keygen(
        "verify",
        "-f",
        str(allowed(tmp_path, key)),
        "-I",
        "gateway",
        "-n",
        sshsig.NAMESPACE,
        "-s",
        "m.sshsig",
        message=message,
        cwd=tmp_path,
    )


@real_program
@needs_ssh_keygen
def test_ssh_keygen_verifies_our_signature(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    armored = sshsig.sign(key, MESSAGE)
    assert armored.startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    done = verify_with_ssh_keygen(tmp_path, key, armored)
    assert done.returncode == 0, done.stderr
    assert f'Good "{sshsig.NAMESPACE}" signature for gateway'.encode() in done.stdout
    novalidate = ssh_keygen(
        "check-novalidate", "-n", sshsig.NAMESPACE, "-s", "m.sshsig", message=MESSAGE, cwd=tmp_path
    )
    assert novalidate.returncode == 0, novalidate.stderr


@real_program
@needs_ssh_keygen
def test_ssh_keygen_refuses_a_changed_message_another_key_or_namespace(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    armored = sshsig.sign(key, MESSAGE)
    assert verify_with_ssh_keygen(tmp_path, key, armored, MESSAGE + b" ").returncode != 0
    other = Ed25519PrivateKey.generate()
    assert verify_with_ssh_keygen(tmp_path, other, armored).returncode != 0
    elsewhere = sshsig.sign(key, MESSAGE, namespace="file")
    assert verify_with_ssh_keygen(tmp_path, key, elsewhere).returncode != 0


@real_program
@needs_ssh_keygen
def test_our_signature_is_byte_for_byte_what_ssh_keygen_makes(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    (tmp_path / "m").write_bytes(MESSAGE)
    made = ssh_keygen(
        "sign", "-f", str(private), "-n", sshsig.NAMESPACE, "m", message=b"", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    theirs = (tmp_path / "m.sig").read_bytes()
    assert sshsig.sign(key, MESSAGE) == theirs  # Ed25519 is deterministic
    sshsig.verify(key.public_key(), MESSAGE, theirs)


def test_verify_round_trip_and_refusals() -> None:
    key = Ed25519PrivateKey.generate()
    armored = sshsig.sign(key, MESSAGE)
    sshsig.verify(key.public_key(), MESSAGE, armored)
    with pytest.raises(CryptoError, match="does not verify"):
        sshsig.verify(key.public_key(), MESSAGE + b"x", armored)
    with pytest.raises(CryptoError, match="another key"):
        sshsig.verify(Ed25519PrivateKey.generate().public_key(), MESSAGE, armored)
    with pytest.raises(CryptoError, match="another namespace"):
        sshsig.verify(key.public_key(), MESSAGE, sshsig.sign(key, MESSAGE, namespace="file"))


def blob_of(armored: bytes) -> bytes:
    return base64.b64decode(b"".join(armored.splitlines()[1:-1]))


def armor(blob: bytes) -> bytes:
    return b"\n".join([sshsig.BEGIN.encode(), base64.b64encode(blob), sshsig.END.encode(), b""])


@pytest.mark.parametrize(
    "hostile",
    [
        b"",
        b"not armor",
        b"-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----\n",
        b"\xff\xfe",
        b"A" * (sshsig.MAX_BYTES + 1),
    ],
)
def test_hostile_armor_is_a_crypto_error(hostile: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(CryptoError):
        sshsig.verify(key.public_key(), MESSAGE, hostile)


def test_hostile_blobs_are_crypto_errors() -> None:
    key = Ed25519PrivateKey.generate()
    blob = blob_of(sshsig.sign(key, MESSAGE))
    cases = [
        blob[:-1],  # truncated
        blob + b"\0",  # trailing bytes
        b"SSHSIX" + blob[6:],  # wrong magic
        blob[:6] + struct.pack(">I", 2) + blob[10:],  # another version
        blob[:10] + struct.pack(">I", 0xFFFFFFFF) + blob[14:],  # a length past the end
    ]
    for case in cases:
        with pytest.raises(CryptoError):
            sshsig.verify(key.public_key(), MESSAGE, armor(case))


def test_allowed_signers_line_names_the_namespace() -> None:
    key = Ed25519PrivateKey.generate()
    line = sshsig.allowed_signers_line(key.public_key())
    assert line.startswith(f'gateway namespaces="{sshsig.NAMESPACE}" ssh-ed25519 AAAA')
