"""A compromised sender attacks the partner's `exchange receive` (issue 10, defects 1 and 5).

Each drop here is signed by the sender's real key, so the signature check passes: what is
tested is that a valid signature buys no say over the partner's file system. Every attack runs
through the real command (`exchange.cli.main`), and must end in one clear line on standard
error, a non-zero exit, and nothing written inside or outside `--out`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyrage
import pytest
from conftest import receive_args

from exchange import acks, cli, keys, manifest
from exchange.audit.checkpoint import sign_checkpoint
from exchange.crypto import signing, sshsig

# The module, not the `receive` function that `exchange` re-exports under the same name.
receive = importlib.import_module("exchange.receive")

Edit = Callable[[dict[str, Any]], None]

HEX16 = "0123456789abcdef"
DROP_ID = f"school-attendance-to-early-help-{HEX16}"
CHECKPOINT = "gateway.example/exchange-ledger\n4\n" + "A" * 44 + "\n\n— gateway.example abc=\n"


@dataclass(frozen=True)
class Parties:
    """The sender's signing key and the partner's age identity and ack key."""

    sender_key: Path
    sender_public: Path
    identity: Path
    recipient: str
    ack_key: Path


def make_parties(folder: Path) -> Parties:
    """Fresh keys for a sender and a partner under `folder`."""
    sender = keys.generate("signing", folder / "sender.key")
    partner = keys.generate("age", folder / "partner.age")
    ack = keys.generate("signing", folder / "partner-ack.key")
    return Parties(
        sender.private_path,
        sender.public_path,
        partner.private_path,
        partner.public,
        ack.private_path,
    )


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    return make_parties(tmp_path / "keys")


def plaintext(fmt: str, rows: int) -> bytes:
    """A small data file in the payload format, with `rows` rows."""
    table = pa.table(
        {
            "person_ref": [f"P{i:04d}" for i in range(rows)],
            "attendance_rate": [0.5 + i / (2 * max(rows, 1)) for i in range(rows)],
        }
    )
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sink)
    return sink.getvalue()


def encrypt(data: bytes, recipient: str) -> bytes:
    return pyrage.encrypt(data, [pyrage.x25519.Recipient.from_str(recipient)])


def signed_checkpoint(key: Any) -> str:
    """A checkpoint the sender signed: the partner witnesses it (exchange.audit.witness)."""
    return sign_checkpoint(CHECKPOINT.split("\n")[0], 4, b"\xcd" * 32, key).note


def manifest_for(parties: Parties, ciphertext: bytes, *, fmt: str, rows: int) -> dict[str, Any]:
    """A manifest as the gateway writes it (docs/manifest.schema.json)."""
    key = signing.load_private_key(parties.sender_key)
    return {
        "manifest_version": manifest.MANIFEST_VERSION,
        "drop_id": DROP_ID,
        "run_id": "manual__2026-11-24T09:00:00+00:00",
        "created_at": "2026-11-24T09:00:05+00:00",
        "contract": {
            "id": "school-attendance-to-early-help",
            "version": "1.0.0",
            "sha256": "ab" * 32,
            "purposes": ["safeguarding"],
            "legal_basis": "Children Act 2004 s.10; UK GDPR 6(1)(e)",
            "provider": "Anyshire County Council",
            "recipient": "Anyshire Early Help",
        },
        "fields": [
            {"name": "person_ref", "type": "string", "transform": "pseudonymise"},
            {"name": "attendance_rate", "type": "number", "transform": "keep"},
        ],
        "rows": {"read": rows, "excluded": {}, "objections_overridden": 0, "sent": rows},
        "payload": manifest.Payload(
            name=manifest.payload_name(fmt),
            format=fmt,
            size=len(ciphertext),
            sha256=hashlib.sha256(ciphertext).hexdigest(),
            cipher="age",
            recipients=(parties.recipient,),
        ).as_dict(),
        "sender": {"key_id": signing.key_id(key.public_key())},
        "ledger": {"seq": 4, "hash": "cd" * 32, "checkpoint": signed_checkpoint(key)},
    }


def sign_manifest(parties: Parties, drop: Path, document: bytes) -> None:
    """Write manifest.json and valid signatures (raw and SSHSIG) of exactly these bytes."""
    key = signing.load_private_key(parties.sender_key)
    (drop / manifest.MANIFEST_NAME).write_bytes(document)
    (drop / manifest.SIGNATURE_NAME).write_bytes(signing.sign(key, document))
    (drop / manifest.SSH_SIGNATURE_NAME).write_bytes(sshsig.sign(key, document))


def make_drop(
    parties: Parties,
    folder: Path,
    *,
    fmt: str = "csv",
    rows: int = 3,
    edit: Edit | None = None,
    data: bytes | None = None,
) -> Path:
    """A drop signed by the sender's real key; `edit` makes its manifest hostile."""
    drop = folder / DROP_ID
    drop.mkdir(parents=True)
    ciphertext = encrypt(plaintext(fmt, rows) if data is None else data, parties.recipient)
    (drop / manifest.payload_name(fmt)).write_bytes(ciphertext)
    body = manifest_for(parties, ciphertext, fmt=fmt, rows=rows)
    if edit is not None:
        edit(body)
    sign_manifest(parties, drop, manifest.to_bytes(body))
    return drop


def take(
    parties: Parties, drop: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    """Run `exchange receive` as a partner types it; the exit code and standard error."""
    capsys.readouterr()
    code = cli.main(receive_args(drop, parties.identity, parties.sender_public, out, *extra))
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file and link under `root`, with its content or target."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                found[str(path)] = path.read_bytes()
    return found


def data_files(out: Path) -> list[str]:
    """What `receive` wrote into `out`, apart from its lock and its record."""
    if not out.exists():
        return []
    own = {receive.LOCK_NAME, receive.RECORD_NAME}
    return sorted(p.name for p in out.iterdir() if p.name not in own)


def assert_refused(code: int, err: str, *, needle: str = "") -> None:
    assert code == cli.NOT_VERIFIED, err
    assert err.startswith("exchange: not verified: drop "), err
    assert err.count("\n") == 1, err  # one line
    assert needle in err, err


# -- a valid drop is still received ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_well_formed_drop_is_received(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    drop = make_drop(parties, tmp_path / "inbox", fmt=fmt, rows=5)
    out = tmp_path / "out"
    code, err = take(parties, drop, out, capsys)
    assert code == cli.OK, err
    assert data_files(out) == [f"{DROP_ID}.{fmt}"]
    assert (out / f"{DROP_ID}.{fmt}").read_bytes() == plaintext(fmt, 5)
    assert (out / f"{DROP_ID}.{fmt}").stat().st_mode & 0o777 == 0o600


def test_a_drop_made_by_the_real_gateway_passes_the_stricter_checks(
    workspace: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = workspace.gateway()
    contract = gateway.check(workspace.contract, run_id="hostile-baseline")
    prepared = gateway.prepare(contract, workspace.source(40), run_id="hostile-baseline")
    drop = workspace.settings.staging / prepared.drop_id
    out = tmp_path / "out"
    code = cli.main(receive_args(drop, workspace.identity, workspace.sender_key, out))
    assert code == cli.OK, capsys.readouterr().err
    assert data_files(out) == [f"{prepared.drop_id}.csv"]


# -- defect 1: names from the manifest ----------------------------------------------------------


def _victim(tmp_path: Path) -> Path:
    """The partner's own files, outside --out: an SSH authorized_keys file."""
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAAC3Nza-partner-admin admin@partner\n")
    return ssh / "authorized_keys"


HOSTILE_NAMES: dict[str, Callable[[Path], Edit]] = {
    # The original attack: an absolute drop id and a format that ends the path where it wants.
    "absolute drop id, format ends the path": lambda home: (
        lambda body: (
            body.__setitem__("drop_id", f"{home}/.ssh/."),
            body["payload"].__setitem__("format", "/.ssh/authorized_keys"),
        )
    ),
    "relative traversal in the drop id": lambda home: (
        lambda body: body.__setitem__("drop_id", f"../home/.ssh/authorized_keys-{HEX16}")
    ),
    "traversal in the format": lambda home: (
        lambda body: body["payload"].__setitem__("format", "csv/../../home/.ssh/authorized_keys")
    ),
    "unknown format": lambda home: lambda body: body["payload"].__setitem__("format", "sh"),
    "payload name outside the drop": lambda home: (
        lambda body: body["payload"].__setitem__("name", "../../home/.ssh/authorized_keys")
    ),
    "payload name of the other format": lambda home: (
        lambda body: body["payload"].__setitem__("name", "data.parquet.age")
    ),
    "dot-dot inside the drop id": lambda home: (
        lambda body: body.__setitem__("drop_id", f"a..b-{HEX16}")
    ),
    "hidden drop id": lambda home: lambda body: body.__setitem__("drop_id", f".received-{HEX16}"),
    "NUL in the drop id": lambda home: lambda body: body.__setitem__("drop_id", f"a\0b-{HEX16}"),
    "newline at the end of the drop id": lambda home: (
        lambda body: body.__setitem__("drop_id", f"attendance-{HEX16}\n")
    ),
    "overlong drop id": lambda home: (
        lambda body: body.__setitem__("drop_id", "a" * 200 + f"-{HEX16}")
    ),
    "terminal escapes in the contract id": lambda home: (
        lambda body: body["contract"].__setitem__("id", "x\x1b]0;pwned\x07")
    ),
    "drop id not a string": lambda home: lambda body: body.__setitem__("drop_id", ["..", "x"]),
    "extra top-level key": lambda home: lambda body: body.__setitem__("output_path", "/tmp/x"),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_NAMES))
def test_a_signed_manifest_cannot_choose_where_the_partner_writes(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str
) -> None:
    victim = _victim(tmp_path)
    drop = make_drop(parties, tmp_path / "inbox", edit=HOSTILE_NAMES[attack](victim.parents[1]))
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    code, err = take(parties, drop, out, capsys)
    assert_refused(code, err)
    assert "\x1b" not in err and "\0" not in err
    assert not out.exists()  # refused before anything is made in --out
    assert snapshot(tmp_path) == before
    assert victim.read_text().startswith("ssh-ed25519 AAAAC3Nza-partner-admin")


def test_schema_refusal_names_the_place_not_the_value(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = make_drop(
        parties, tmp_path / "inbox", edit=lambda b: b.__setitem__("drop_id", "../secret-value")
    )
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="at /drop_id (pattern)")
    assert "secret-value" not in err


def test_a_schema_pattern_is_not_passed_by_a_final_line_break(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON Schema's `$` is the end of the value (Python's `re` also let it match before a
    final line break): a digest with one after it is refused by the schema itself."""
    drop = make_drop(
        parties,
        tmp_path / "inbox",
        edit=lambda b: b["payload"].__setitem__("sha256", b["payload"]["sha256"] + "\n"),
    )
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="at /payload/sha256 (pattern)")


def test_an_existing_file_is_never_overwritten_without_asking(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / f"{DROP_ID}.csv"
    theirs.write_text("the partner's own work\n")
    drop = make_drop(parties, tmp_path / "inbox")
    code, err = take(parties, drop, out, capsys)
    assert_refused(code, err, needle="refusing to overwrite it (--overwrite replaces it)")
    assert theirs.read_text() == "the partner's own work\n"
    assert receive.received_drops(out) == {}
    # Asked for explicitly, it is replaced.
    code, err = take(parties, drop, out, capsys, "--overwrite")
    assert code == cli.OK, err
    assert theirs.read_bytes() == plaintext("csv", 3)


def test_again_keeps_an_identical_output_and_refuses_a_different_one(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    drop = make_drop(parties, tmp_path / "inbox")
    assert take(parties, drop, out, capsys)[0] == cli.OK
    output = out / f"{DROP_ID}.csv"
    assert take(parties, drop, out, capsys, "--again")[0] == cli.OK
    output.write_text("edited by the partner since\n")
    code, err = take(parties, drop, out, capsys, "--again")
    assert_refused(code, err, needle="with other content")
    assert output.read_text() == "edited by the partner since\n"
    assert data_files(out) == [output.name]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_link_planted_in_out_is_never_written_through(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str], overwrite: bool
) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{DROP_ID}.csv").symlink_to(victim)
    (out / f".{DROP_ID}.csv.partial").symlink_to(victim.parent / "planted")
    drop = make_drop(parties, tmp_path / "inbox")
    before = snapshot(tmp_path / "home")
    code, err = take(parties, drop, out, capsys, *(["--overwrite"] if overwrite else []))
    assert_refused(code, err, needle="symbolic link")
    assert snapshot(tmp_path / "home") == before
    assert (out / f"{DROP_ID}.csv").is_symlink()


def test_a_link_planted_where_the_ack_goes_is_never_written_through(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / acks.ack_name(DROP_ID)).symlink_to(victim)
    drop = make_drop(parties, tmp_path / "inbox")
    before = snapshot(tmp_path / "home")
    code, err = take(parties, drop, out, capsys, "--ack-key", str(parties.ack_key), "--overwrite")
    assert_refused(code, err, needle="symbolic link")
    assert snapshot(tmp_path / "home") == before
    assert data_files(out) == [acks.ack_name(DROP_ID)]


def test_an_existing_ack_is_replaced_only_if_it_is_the_partners_own(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = out / acks.ack_name(DROP_ID)
    other.write_text("someone else's file\n")
    drop = make_drop(parties, tmp_path / "inbox")
    ack = ("--ack-key", str(parties.ack_key))
    code, err = take(parties, drop, out, capsys, *ack)
    assert_refused(code, err, needle="is not your ack of it")
    assert other.read_text() == "someone else's file\n"
    other.unlink()
    assert take(parties, drop, out, capsys, *ack)[0] == cli.OK
    first = other.read_bytes()
    # Taking the drop again (to resend a lost ack) replaces the partner's own earlier ack.
    assert take(parties, drop, out, capsys, *ack, "--again")[0] == cli.OK
    assert json.loads(other.read_bytes())["body"]["drop_id"] == DROP_ID
    assert first != b""


@pytest.mark.parametrize("member", ["manifest.json", "data.csv.age"])
def test_a_link_in_the_drop_is_not_followed(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str], member: str
) -> None:
    drop = make_drop(parties, tmp_path / "inbox")
    real = tmp_path / "elsewhere"
    real.mkdir()
    os.replace(drop / member, real / member)
    (drop / member).symlink_to(real / member)
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="not a plain file")
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_the_drop_does_not_hang_the_receiver(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = make_drop(parties, tmp_path / "inbox")
    (drop / "manifest.json.sig").unlink()
    os.mkfifo(drop / "manifest.json.sig")
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="not a plain file")


def test_deeply_nested_signed_manifest_is_refused_in_one_line(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = make_drop(parties, tmp_path / "inbox")
    sign_manifest(parties, drop, b"[" * 600_000 + b"]" * 600_000)
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="larger than")
    sign_manifest(parties, drop, b"[" * 100_000 + b"]" * 100_000)
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="nested too deeply")


def test_duplicate_keys_in_a_signed_manifest_are_refused(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = make_drop(parties, tmp_path / "inbox")
    document = (drop / "manifest.json").read_bytes()
    doubled = document.replace(b'"drop_id": ', b'"drop_id": "../x",\n  "drop_id": ', 1)
    sign_manifest(parties, drop, doubled)
    code, err = take(parties, drop, tmp_path / "out", capsys)
    assert_refused(code, err, needle="duplicate key")


def test_decrypted_data_that_does_not_parse_is_refused_and_leaves_nothing(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop = make_drop(parties, tmp_path / "inbox", fmt="parquet", data=b"PAR1 not parquet")
    out = tmp_path / "out"
    code, err = take(parties, drop, out, capsys)
    assert_refused(code, err, needle="not a readable parquet file")
    assert data_files(out) == []


# -- defect 5: the payload is swapped between the checksum and decryption -----------------------


def _swap_before_decrypting(
    monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]
) -> list[bool]:
    """Run `swap` after the payload's checksum is verified, before it is decrypted."""
    original = receive._check_addressed
    done: list[bool] = []

    def checked_then_swapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        swap()
        done.append(True)
        return result

    monkeypatch.setattr(receive, "_check_addressed", checked_then_swapped)
    return done


def test_a_payload_renamed_over_after_the_checksum_is_not_what_is_decrypted(
    parties: Parties,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drop = make_drop(parties, tmp_path / "inbox", rows=3)
    evil = encrypt(b"person_ref,attendance_rate\nEVIL,1\nEVIL,1\nEVIL,1\n", parties.recipient)
    (tmp_path / "evil.age").write_bytes(evil)
    done = _swap_before_decrypting(
        monkeypatch, lambda: os.replace(tmp_path / "evil.age", drop / "data.csv.age")
    )
    out = tmp_path / "out"
    code, err = take(parties, drop, out, capsys)
    assert done and code == cli.OK, err
    # The file decrypted is the one whose checksum was verified, not the one swapped in.
    assert (out / f"{DROP_ID}.csv").read_bytes() == plaintext("csv", 3)


def test_a_payload_rewritten_in_place_after_the_checksum_is_refused(
    parties: Parties,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    genuine = plaintext("csv", 3)
    drop = make_drop(parties, tmp_path / "inbox", rows=3)
    evil = encrypt(genuine.replace(b"P0000", b"EVIL0"), parties.recipient)
    inode = (drop / "data.csv.age").stat().st_ino

    def rewrite() -> None:
        with (drop / "data.csv.age").open("r+b") as same_file:  # the same inode, new bytes
            same_file.write(evil)
            same_file.truncate()

    done = _swap_before_decrypting(monkeypatch, rewrite)
    out = tmp_path / "out"
    code, err = take(parties, drop, out, capsys)
    assert done and (drop / "data.csv.age").stat().st_ino == inode
    assert_refused(code, err, needle="changed while it was read")
    assert data_files(out) == []
    assert receive.received_drops(out) == {}


def test_the_drop_folder_swapped_after_the_manifest_is_read_is_not_used(
    parties: Parties,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drop = make_drop(parties, tmp_path / "inbox", rows=3)
    other = make_drop(parties, tmp_path / "other", rows=3, data=b"person_ref\nEVIL\nEVIL\nEVIL\n")

    def swap_folders() -> None:
        os.replace(drop, tmp_path / "moved-away")
        os.replace(other, drop)

    _swap_before_decrypting(monkeypatch, swap_folders)
    out = tmp_path / "out"
    code, err = take(parties, drop, out, capsys)
    assert code == cli.OK, err
    assert (out / f"{DROP_ID}.csv").read_bytes() == plaintext("csv", 3)


def test_received_at_is_recorded_in_utc(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert take(parties, make_drop(parties, tmp_path / "inbox"), out, capsys)[0] == cli.OK
    when = dt.datetime.fromisoformat(receive.received_drops(out)[DROP_ID]["received_at"])
    assert when.utcoffset() == dt.timedelta(0)
