"""Unit tests for age encryption, Ed25519 signatures, key generation and private files."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange import keys
from exchange.crypto import age, signing
from exchange.crypto.streams import ChunkReader, HashingWriter
from exchange.errors import CryptoError
from exchange.files import open_private, private_dir, write_private

MB = 1 << 20
CHUNK = 64 * 1024


class ProducerFailed(Exception):
    """A failure inside the code that produces plaintext chunks."""


def mode(path: Path) -> int:
    """The permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def plaintext() -> bytes:
    """Three and a bit megabytes of incompressible data."""
    return os.urandom(3 * MB + 12345)


@pytest.fixture
def pair(tmp_path: Path) -> keys.KeyPair:
    """A fresh age key pair written the way the gateway writes them."""
    return keys.generate("age", tmp_path / "partner.age")


def chunks(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    """The data as a stream of chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def encrypt(data: bytes, recipients: list[str]) -> bytes:
    """Encrypt through the streaming API and return the ciphertext."""
    out = io.BytesIO()
    age.encrypt_chunks(chunks(data), out, recipients)
    return out.getvalue()


def decrypt(ciphertext: bytes, identity_file: Path) -> bytes:
    """Decrypt with the identities in a file."""
    out = io.BytesIO()
    age.decrypt_stream(io.BytesIO(ciphertext), out, age.load_identities(identity_file))
    return out.getvalue()


# --- age ------------------------------------------------------------------------------------


def test_encrypt_then_decrypt_round_trips(plaintext: bytes, pair: keys.KeyPair) -> None:
    """Multi-megabyte data comes back byte for byte."""
    ciphertext = encrypt(plaintext, [pair.public])
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert plaintext[:64] not in ciphertext
    assert decrypt(ciphertext, pair.private_path) == plaintext


def test_standard_age_cli_decrypts_what_we_encrypt(
    plaintext: bytes, pair: keys.KeyPair, tmp_path: Path
) -> None:
    """A partner with only the standard `age` tool can read a drop."""
    encrypted = tmp_path / "drop.age"
    encrypted.write_bytes(encrypt(plaintext, [pair.public]))
    result = subprocess.run(
        ["age", "-d", "-i", str(pair.private_path), str(encrypted)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == plaintext


def test_every_recipient_can_decrypt(tmp_path: Path) -> None:
    """With two recipient keys, either identity decrypts."""
    a = keys.generate("age", tmp_path / "a.age")
    b = keys.generate("age", tmp_path / "b.age")
    ciphertext = encrypt(b"two readers", [a.public, b.public])
    assert decrypt(ciphertext, a.private_path) == decrypt(ciphertext, b.private_path)


def test_wrong_identity_is_an_opaque_crypto_error(pair: keys.KeyPair, tmp_path: Path) -> None:
    """Another key cannot decrypt; the error says nothing about keys or content."""
    ciphertext = encrypt(b"secret rows", [pair.public])
    other = keys.generate("age", tmp_path / "other.age")
    with pytest.raises(CryptoError) as caught:
        decrypt(ciphertext, other.private_path)
    assert str(caught.value) == "decryption failed: not for this key, or damaged"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def _flip(data: bytes, at: int) -> bytes:
    """The data with one bit flipped at offset `at`."""
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda c: _flip(c, 40), id="header-bit"),
        pytest.param(lambda c: c[:20], id="header-cut"),
        pytest.param(lambda c: _flip(c, len(c) - 500), id="payload-bit"),
        pytest.param(lambda c: c[:-1000], id="payload-cut"),
    ],
)
def test_damaged_ciphertext_gives_the_same_opaque_error(
    pair: keys.KeyPair, damage: Callable[[bytes], bytes]
) -> None:
    """Damage anywhere is reported exactly like a wrong key: one opaque CryptoError."""
    ciphertext = damage(encrypt(os.urandom(200_000), [pair.public]))
    with pytest.raises(CryptoError, match=r"^decryption failed: not for this key, or damaged$"):
        decrypt(ciphertext, pair.private_path)


def test_producer_error_propagates_as_itself(pair: keys.KeyPair) -> None:
    """An exception inside the chunk producer surfaces as the original type, not pyrage's."""

    def failing() -> Iterator[bytes]:
        yield b"x" * (2 * MB)
        raise ProducerFailed("source went away")

    with pytest.raises(ProducerFailed, match="source went away"):
        age.encrypt_chunks(failing(), io.BytesIO(), [pair.public])


def test_producer_error_before_the_first_chunk(pair: keys.KeyPair) -> None:
    """Failing before any data is produced still gives the original exception."""

    def failing() -> Iterator[bytes]:
        raise ProducerFailed("nothing to read")
        yield b""  # pragma: no cover

    with pytest.raises(ProducerFailed):
        age.encrypt_chunks(failing(), io.BytesIO(), [pair.public])


def test_bad_or_no_recipients(pair: keys.KeyPair) -> None:
    """A bad key is named by position; an empty list refuses to encrypt to nobody."""
    with pytest.raises(CryptoError, match="#2"):
        age.recipients([pair.public, "age1notakey"])
    with pytest.raises(CryptoError, match="nobody"):
        age.encrypt_chunks(chunks(b"data"), io.BytesIO(), [])


def test_load_identities_refuses_files_without_a_key(tmp_path: Path) -> None:
    """An identity file with no key, a bad key or no file at all is a CryptoError."""
    empty = write_private(tmp_path / "empty.age", b"# just a comment\n")
    with pytest.raises(CryptoError, match="no age identity"):
        age.load_identities(empty)
    bad = write_private(tmp_path / "bad.age", b"AGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(CryptoError, match="invalid key"):
        age.load_identities(bad)
    with pytest.raises(CryptoError, match="cannot read"):
        age.load_identities(tmp_path / "absent.age")


# --- signatures -----------------------------------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> keys.KeyPair:
    """A fresh signing key pair."""
    return keys.generate("signing", tmp_path / "gateway.key")


def test_sign_and_verify(signer: keys.KeyPair) -> None:
    """A signature made with the private key verifies with the public one."""
    private = signing.load_private_key(signer.private_path)
    public = signing.load_public_key(signer.public_path)
    message = b'{"manifest_version": "exchange-manifest/1"}\n'
    signature = signing.sign(private, message)
    assert signature.endswith(b"\n")
    signing.verify(public, message, signature)


def test_tampered_message_or_signature_is_refused(signer: keys.KeyPair, tmp_path: Path) -> None:
    """A changed message, a changed signature, a non-base64 one or another key all fail."""
    private = signing.load_private_key(signer.private_path)
    public = signing.load_public_key(signer.public_path)
    message = b"rows: 1200"
    signature = signing.sign(private, message)
    with pytest.raises(CryptoError, match="does not verify"):
        signing.verify(public, b"rows: 1201", signature)
    raw = bytearray(signature)
    raw[5] = ord("A") if raw[5] != ord("A") else ord("B")
    with pytest.raises(CryptoError, match="does not verify"):
        signing.verify(public, message, bytes(raw))
    with pytest.raises(CryptoError, match="does not verify"):
        signing.verify(public, message, b"!!! not base64 !!!")
    other = keys.generate("signing", tmp_path / "other.key")
    with pytest.raises(CryptoError, match="does not verify"):
        signing.verify(signing.load_public_key(other.public_path), message, signature)


def test_key_id_is_stable_and_distinct(signer: keys.KeyPair, tmp_path: Path) -> None:
    """The fingerprint is the same however the key is loaded, and differs between keys."""
    from_private = signing.key_id(signing.load_private_key(signer.private_path).public_key())
    from_public = signing.key_id(signing.load_public_key(signer.public_path))
    assert from_private == from_public
    assert from_public.startswith("ed25519:") and len(from_public) == len("ed25519:") + 16
    assert signer.public.endswith(from_public)  # the default comment is the key id
    other = keys.generate("signing", tmp_path / "other.key")
    assert signing.key_id(signing.load_public_key(other.public_path)) != from_public


def test_key_id_known_answer() -> None:
    """The id is 'ed25519:' and the first 16 hex digits of SHA-256 of the raw public key."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    raw = key.public_bytes_raw()
    assert signing.key_id(key) == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def test_passphrase_protected_signing_key(tmp_path: Path) -> None:
    """An encrypted key loads with its passphrase and is refused without it."""
    pair = keys.generate("signing", tmp_path / "locked.key", passphrase=b"correct horse")
    assert b"ENCRYPTED" in pair.private_path.read_bytes()
    with pytest.raises(CryptoError, match="passphrase"):
        signing.load_private_key(pair.private_path)
    key = signing.load_private_key(pair.private_path, b"correct horse")
    assert signing.key_id(key.public_key()) == signing.key_id(
        signing.load_public_key(pair.public_path)
    )


def test_garbage_or_non_ed25519_private_key_is_refused(tmp_path: Path) -> None:
    """A private key file that is not an Ed25519 key is a CryptoError naming the file."""
    junk = write_private(tmp_path / "junk.key", b"hello\n")
    with pytest.raises(CryptoError, match=r"junk\.key is unreadable"):
        signing.load_private_key(junk)
    ec = write_private(
        tmp_path / "ec.key",
        ec_key.generate_private_key(ec_key.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with pytest.raises(CryptoError, match="not an Ed25519 key"):
        signing.load_private_key(ec)
    with pytest.raises(CryptoError, match="cannot read"):
        signing.load_private_key(tmp_path / "absent.key")


def test_non_ed25519_public_key_is_refused(tmp_path: Path) -> None:
    """A well-formed public key of another algorithm is a CryptoError."""
    ec = tmp_path / "ec.pub"
    ec.write_bytes(
        ec_key.generate_private_key(ec_key.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(CryptoError, match="not an Ed25519 key"):
        signing.load_public_key(ec)


@pytest.mark.parametrize(
    "text", ["hello\n", "ssh-ed25519 not-base64\n", "ssh-rsa AAAAB3NzaC1yc2E= x\n"]
)
def test_unreadable_public_key_is_a_crypto_error(tmp_path: Path, text: str) -> None:
    """A public key file that is not a key is a CryptoError, not an AttributeError."""
    junk = tmp_path / "junk.pub"
    junk.write_text(text)
    with pytest.raises(CryptoError, match=r"junk\.pub is unreadable"):
        signing.load_public_key(junk)


# --- key generation -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["signing", "age", "ssh"])
def test_generate_writes_private_0600_and_public(tmp_path: Path, kind: str) -> None:
    """Every kind writes a 0600 private key and a readable .pub beside it."""
    pair = keys.generate(kind, tmp_path / f"{kind}.key", comment="ops@example")
    assert pair.private_path == tmp_path / f"{kind}.key"
    assert pair.public_path == tmp_path / f"{kind}.key.pub"
    assert mode(pair.private_path) == 0o600
    assert mode(pair.public_path) == 0o644
    assert pair.public_path.read_text().strip() == pair.public
    header = {
        "signing": "-----BEGIN PRIVATE KEY-----",
        "age": "# created: ",
        "ssh": "-----BEGIN OPENSSH PRIVATE KEY-----",
    }[kind]
    assert pair.private_path.read_text().startswith(header)
    if kind != "age":
        assert pair.public.endswith(" ops@example")


@pytest.mark.parametrize("kind", ["signing", "age", "ssh"])
def test_generate_refuses_to_overwrite(tmp_path: Path, kind: str) -> None:
    """An existing key is never replaced unless asked; with overwrite it is a new key."""
    path = tmp_path / "k"
    first = keys.generate(kind, path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        keys.generate(kind, path)
    assert path.read_bytes() == before
    assert first.public_path.read_text().strip() == first.public
    second = keys.generate(kind, path, overwrite=True)
    assert path.read_bytes() != before and second.public != first.public
    assert mode(path) == 0o600


def test_generate_with_only_a_stale_public_file_writes_nothing(tmp_path: Path) -> None:
    """If the .pub already exists, refusing must not leave a new, unmatched private key."""
    path = tmp_path / "k"
    (tmp_path / "k.pub").write_text("ssh-ed25519 AAAA old\n")
    with pytest.raises(FileExistsError):
        keys.generate("signing", path)
    assert not path.exists()


def test_generate_unknown_kind(tmp_path: Path) -> None:
    """Only signing, age and ssh keys are made."""
    with pytest.raises(ValueError, match="unknown key kind"):
        keys.generate("rsa", tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_ssh_key_loads_with_paramiko(tmp_path: Path) -> None:
    """The SSH client key is OpenSSH format paramiko reads, matching its .pub line."""
    pair = keys.generate("ssh", tmp_path / "id_ed25519", comment="gateway@host")
    assert pair.private_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key = paramiko.PKey.from_path(pair.private_path)
    assert key.get_name() == "ssh-ed25519"
    kind, blob, comment = pair.public.split(" ")
    assert (kind, blob, comment) == ("ssh-ed25519", key.get_base64(), "gateway@host")


def test_age_identity_loads_and_matches_the_cli(pair: keys.KeyPair) -> None:
    """The identity file reads with load_identities and with age-keygen, same public key."""
    (identity,) = age.load_identities(pair.private_path)
    assert str(identity.to_public()) == pair.public
    assert pair.public.startswith("age1")
    assert f"# public key: {pair.public}" in pair.private_path.read_text()
    result = subprocess.run(
        ["age-keygen", "-y", str(pair.private_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == pair.public


def test_age_cli_encrypts_to_a_generated_key(pair: keys.KeyPair, tmp_path: Path) -> None:
    """What the standard tool encrypts to our public key, we decrypt."""
    result = subprocess.run(
        ["age", "-r", pair.public],
        input=b"from the age tool",
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert decrypt(result.stdout, pair.private_path) == b"from the age tool"


# --- streams and private files --------------------------------------------------------------


def test_hashing_writer_counts_and_hashes(tmp_path: Path) -> None:
    """Size and SHA-256 are of exactly what was written through to the file."""
    parts = [b"alpha", b"", bytearray(b"beta"), memoryview(os.urandom(70_000))]
    target = tmp_path / "out.bin"
    with target.open("wb") as handle:
        writer = HashingWriter(handle)
        for part in parts:
            assert writer.write(part) == len(part)
    data = b"".join(bytes(p) for p in parts)
    assert target.read_bytes() == data
    assert writer.size == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    assert HashingWriter(io.BytesIO()).sha256 == hashlib.sha256(b"").hexdigest()


def test_hashing_writer_under_encryption(pair: keys.KeyPair, tmp_path: Path) -> None:
    """Encrypting through a HashingWriter hashes the ciphertext file as written."""
    target = tmp_path / "drop.age"
    with target.open("wb") as handle:
        writer = HashingWriter(handle)
        age.encrypt_chunks(chunks(os.urandom(MB)), writer, [pair.public])
    ciphertext = target.read_bytes()
    assert writer.size == len(ciphertext)
    assert writer.sha256 == hashlib.sha256(ciphertext).hexdigest()


def test_chunk_reader_reads_across_chunks() -> None:
    """The reader joins chunks of any size, empty ones included."""
    reader = io.BufferedReader(ChunkReader([b"ab", b"", b"cdef", b"g"]), buffer_size=3)
    assert reader.read() == b"abcdefg"


def test_write_private_is_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    """A private file is 0600 and is not replaced unless asked."""
    path = write_private(tmp_path / "secret.bin", b"one")
    assert mode(path) == 0o600 and path.read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        write_private(path, b"two")
    assert path.read_bytes() == b"one"
    write_private(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"


def test_write_private_tightens_an_existing_file(tmp_path: Path) -> None:
    """Overwriting a world-readable file leaves it 0600."""
    path = tmp_path / "loose.bin"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with open_private(path, overwrite=True) as handle:
        handle.write(b"new")
    assert mode(path) == 0o600 and path.read_bytes() == b"new"


def test_private_dir_is_0700(tmp_path: Path) -> None:
    """A private folder only its owner can enter, even if it existed wider."""
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert private_dir(folder) == folder
    assert mode(folder) == 0o700
    nested = private_dir(tmp_path / "a" / "b")
    assert mode(nested) == 0o700


def test_pyrage_identity_round_trip_sanity() -> None:
    """The library we build on agrees with itself (guards against a broken install)."""
    identity = pyrage.x25519.Identity.generate()
    ciphertext = pyrage.encrypt(b"x", [identity.to_public()])
    assert pyrage.decrypt(ciphertext, [identity]) == b"x"
