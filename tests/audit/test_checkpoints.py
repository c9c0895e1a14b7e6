"""C2SP signed notes and checkpoints (exchange.audit.checkpoint): format, round trip, signatures."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import Checkpoint, verifier_key
from exchange.audit.checkpoint import key_hash, open_note, sign_checkpoint, sign_note
from exchange.errors import LedgerError

GO = json.loads((Path(__file__).parent / "vectors" / "signed_note_go.json").read_text())
ORIGIN = "gateway.example.org/audit"
ROOT = hashlib.sha256(b"a root").digest()


def go_private_key() -> Ed25519PrivateKey:
    """The Go example's signer key: PRIVATE+KEY+<name>+<hash>+base64(0x01 || seed)."""
    material = base64.b64decode(GO["signer_key"].split("+", 4)[4])  # base64 may hold '+'
    assert material[0] == 1
    return Ed25519PrivateKey.from_private_bytes(material[1:])


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_the_go_reference_note_is_reproduced_byte_for_byte() -> None:
    """Our signer makes exactly the note of golang.org/x/mod/sumdb/note's example."""
    private = go_private_key()
    assert verifier_key(GO["name"], private.public_key()) == GO["verifier_key"]
    assert sign_note(GO["text"], GO["name"], private) == GO["note"]
    assert open_note(GO["note"], GO["name"], private.public_key()) == GO["text"]
    with pytest.raises(LedgerError, match="does not verify"):
        open_note(
            GO["note"].replace("cryptography", "cryptographY"), GO["name"], private.public_key()
        )


def test_checkpoint_text_format(key: Ed25519PrivateKey) -> None:
    """Origin, size, base64 root; blank line; '— name base64(key hash || signature)'."""
    checkpoint = sign_checkpoint(ORIGIN, 42, ROOT, key)
    body, _, signatures = checkpoint.note.partition("\n\n")
    assert body + "\n" == f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n" == checkpoint.text
    assert signatures.endswith("\n") and signatures.count("\n") == 1
    dash, name, blob = signatures.strip().split(" ")
    assert (dash, name) == ("\u2014", ORIGIN)
    raw = base64.b64decode(blob)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    assert raw[:4] == key_hash(ORIGIN, key.public_key())
    key.public_key().verify(raw[4:], checkpoint.text.encode())  # raises if wrong
    assert len(raw) == 4 + 64


def test_checkpoint_round_trip(key: Ed25519PrivateKey) -> None:
    made = sign_checkpoint(ORIGIN, 7, ROOT, key)
    opened = Checkpoint.open(made.note, key.public_key(), origin=ORIGIN)
    assert (opened.origin, opened.size, opened.root, opened.note) == (ORIGIN, 7, ROOT, made.note)
    assert Checkpoint.parse(made.note) == opened
    assert opened.root_hex == ROOT.hex()
    empty = sign_checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest(), key)
    assert Checkpoint.open(empty.note, key.public_key()).size == 0


def test_signatures_by_other_keys_are_ignored_but_ours_is_required(
    key: Ed25519PrivateKey,
) -> None:
    """A witness's cosignature line may follow; a note without our signature is refused."""
    made = sign_checkpoint(ORIGIN, 3, ROOT, key)
    witness = Ed25519PrivateKey.generate()
    cosigned = made.note + sign_note(made.text, "witness.example", witness).split("\n\n")[1]
    assert Checkpoint.open(cosigned, key.public_key()).size == 3
    assert open_note(cosigned, "witness.example", witness.public_key()) == made.text
    with pytest.raises(LedgerError, match="no signature by"):
        Checkpoint.open(made.note, witness.public_key())
    impostor = sign_checkpoint(ORIGIN, 3, ROOT, witness)  # same name, another key
    with pytest.raises(LedgerError, match="no signature by"):
        Checkpoint.open(impostor.note, key.public_key())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.replace("\n5\n", "\n6\n", 1), "does not verify"),
        (lambda n: n.replace(ORIGIN, "other.example/log"), "no signature by"),
        (lambda n: n.replace("\n\n", "\n"), "malformed"),
        (lambda n: n.replace("\u2014 ", "-- "), "does not start"),
        (lambda n: n[:-6] + "!!!!=\n", "not base64"),
        (lambda n: n.rstrip("\n"), "no signature block"),
    ],
)
def test_altered_notes_are_refused(key: Ed25519PrivateKey, change, message: str) -> None:
    note = sign_checkpoint(ORIGIN, 5, ROOT, key).note
    with pytest.raises(LedgerError, match=message):
        Checkpoint.open(change(note), key.public_key())


@pytest.mark.parametrize(
    "text",
    [
        "origin\n05\n{root}\n\n",
        "origin\n-1\n{root}\n\n",
        "origin\n5\nnot-base64\n\n",
        "origin\n5\n" + base64.b64encode(b"short").decode() + "\n\n",
        "\n5\n{root}\n\n",
        "origin\n5\n\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(LedgerError, match="malformed checkpoint"):
        Checkpoint.parse(text.format(root=base64.b64encode(ROOT).decode()))


def test_origin_pin_and_names(key: Ed25519PrivateKey) -> None:
    note = sign_checkpoint(ORIGIN, 1, ROOT, key).note
    with pytest.raises(LedgerError, match="not 'elsewhere'"):
        Checkpoint.open(note, key.public_key(), origin="elsewhere")
    for bad in ("", "with space", "plus+sign"):
        with pytest.raises(LedgerError):
            sign_checkpoint(bad, 1, ROOT, key)
    with pytest.raises(LedgerError, match="newline"):
        sign_note("no final newline", ORIGIN, key)
