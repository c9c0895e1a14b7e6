"""Attacks by someone who can write the ledger database (issue 10, defect 4), each performed
with real SQL on a real SQLite file and a real PostgreSQL server, then refused by the real
`exchange` command with one clear line and exit code 5.

Checkpoints handed out are kept outside the database (EXCHANGE_HOME/checkpoints): deleting the
checkpoint rows, editing an entry and recomputing every hash no longer verifies, and the
gateway refuses to sign the forged history.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from audit_fixtures import ORIGIN

from exchange import cli, keys
from exchange.audit import Disclosure, Disclosures, Ledger
from exchange.audit.anchor import Anchor, anchor_folder
from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.disclosures import key_id, lookup_hash
from exchange.audit.ledger import GENESIS, Entry
from exchange.crypto.signing import load_private_key
from exchange.settings import Settings

DISCLOSURE_KEY = bytes(range(64, 96))
SUBJECTS = [f"P{n:05d}" for n in range(1, 41)]
RECIPIENT = "Anyshire County Council"


@dataclass
class Gateway:
    """A gateway's state folder, signing key and ledger URL, as the CLI sees them."""

    home: Path
    url: str
    key_path: Path

    @property
    def public(self) -> Path:
        return Path(f"{self.key_path}.pub")

    @property
    def settings(self) -> Settings:
        return Settings.from_env(
            {
                "EXCHANGE_HOME": str(self.home),
                "EXCHANGE_AUDIT_URL": self.url,
                "EXCHANGE_SIGNING_KEY": str(self.key_path),
            }
        )

    def ledger(self) -> Ledger:
        return Ledger(self.url, anchor=anchor_folder(self.home))


@pytest.fixture
def gateway(tmp_path: Path, backend_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """EXCHANGE_* pointing at a fresh ledger on each backend, a signing key and secrets."""
    home = tmp_path / "home"
    key = keys.generate("signing", home / "keys" / "gateway.key").private_path
    secrets = tmp_path / "secrets.json"
    secrets.write_text(
        json.dumps({"secrets": {"disclosure-key": base64.b64encode(DISCLOSURE_KEY).decode()}})
    )
    secrets.chmod(0o600)
    for name, value in {
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_AUDIT_URL": backend_url,
        "EXCHANGE_SIGNING_KEY": str(key),
        "EXCHANGE_SECRETS": str(secrets),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EXCHANGE_LOG_ORIGIN", raising=False)
    Ledger(backend_url).close()  # the tables, as the gateway makes them
    yield Gateway(home, backend_url, key)


def exchange(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the real command in-process: exit code, standard output, standard error."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refusal(err: str) -> str:
    """The one error line (warnings aside)."""
    lines = [line for line in err.splitlines() if not line.startswith("exchange: warning")]
    assert len(lines) == 1, err
    return lines[0]


def sql(url: str, *statements: str, **params: object) -> None:
    """Change the tables directly, as someone with database access only could."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)
    engine.dispose()


def rechain(url: str, *, seq: int, body: dict) -> None:
    """Edit entry `seq` and recompute every hash after it with SQL: a chain that links again."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_ledger ORDER BY seq")).all()
        prev = GENESIS
        for row in rows:
            values = dict(row._mapping)
            if values["seq"] == seq:
                values["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
            draft = Entry(**{**values, "prev_hash": prev, "entry_hash": ""})
            forged = Entry(**{**draft.__dict__, "entry_hash": draft.computed_hash()})
            conn.execute(
                sa.text(
                    "UPDATE audit_ledger SET body = :body, prev_hash = :prev, entry_hash = :hash "
                    "WHERE seq = :seq"
                ),
                {"body": forged.body, "prev": prev, "hash": forged.entry_hash, "seq": forged.seq},
            )
            prev = forged.entry_hash
    engine.dispose()


def fill(url: str, count: int, start: int = 1) -> None:
    ledger = Ledger(url)
    for n in range(start, start + count):
        ledger.append("step", {"n": n, "rows": n * 10}, run_id=f"run-{n}", contract_id="c-1")
    ledger.close()


def checkpoint_rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM audit_checkpoints")).scalar_one()
    engine.dispose()
    return int(count)


# -- the rewrite of issue 10: delete the checkpoints, edit an entry, re-chain ---------------------


def test_a_rechained_history_is_refused_by_verify_and_never_signed(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(gateway.url, 6)
    code, handed_out, _ = exchange(capsys, "audit", "checkpoint")  # into a drop's manifest
    assert code == cli.OK
    anchor = anchor_folder(gateway.home)
    assert (anchor / "latest.json").stat().st_mode & 0o777 == 0o600
    assert anchor.stat().st_mode & 0o777 == 0o700
    fill(gateway.url, 3, start=7)
    code, out, _ = exchange(capsys, "audit", "verify", "--public-key", str(gateway.public))
    assert code == cli.OK and "consistent with 1 checkpoint(s) kept outside" in out

    sql(gateway.url, "DELETE FROM audit_checkpoints")
    rechain(gateway.url, seq=2, body={"n": 2, "rows": 0})
    assert Ledger(gateway.url, create=False).verify().ok  # the database alone still verifies

    code, _, err = exchange(capsys, "audit", "verify", "--public-key", str(gateway.public))
    assert code == cli.NOT_VERIFIED
    line = refusal(err)
    assert line.startswith("exchange: ledger broken: entry 1: entries 1..6 differ from ")
    assert "handed-out checkpoint (size 6)" in line and "rewritten" in line
    log_before = (anchor / "log.jsonl").read_bytes()
    code, out, err = exchange(capsys, "audit", "checkpoint")  # what every run does first
    assert code == cli.NOT_VERIFIED and out == ""
    assert refusal(err) == (
        "exchange: not verified: will not sign: the ledger is not an extension of the last "
        "checkpoint handed out (size 6): entry 6 differs (history rewritten)"
    )
    assert checkpoint_rows(gateway.url) == 0  # nothing signed, nothing stored
    assert (anchor / "log.jsonl").read_bytes() == log_before
    # The note handed out earlier still proves the genuine history, offline too.
    assert Checkpoint.parse(handed_out).size == 6


def test_deleting_the_newest_entries_and_the_checkpoints_is_refused(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(gateway.url, 5)
    assert exchange(capsys, "audit", "checkpoint")[0] == cli.OK
    sql(gateway.url, "DELETE FROM audit_checkpoints", "DELETE FROM audit_ledger WHERE seq > 3")
    code, _, err = exchange(capsys, "audit", "verify", "--public-key", str(gateway.public))
    assert code == cli.NOT_VERIFIED
    assert "ends at entry 3 but handed-out checkpoint (size 5) was signed" in refusal(err)
    code, _, err = exchange(capsys, "audit", "checkpoint")
    assert code == cli.NOT_VERIFIED
    assert refusal(err).endswith("(size 5): entry 5 is missing (entries deleted)")


def test_checkpoints_extend_the_last_one_handed_out_without_rereading_the_ledger(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each new checkpoint is built from the last one's edge and the new entries, and an
    entry edited (not re-chained) before it is still caught by verify."""
    private = load_private_key(gateway.key_path)
    ledger = gateway.ledger()
    sizes = []
    for batch in (1, 2, 5, 1, 9):
        fill(gateway.url, batch, start=sum(sizes) + 1 if sizes else 1)
        sizes.append(ledger.checkpoint(private, ORIGIN).size)
    assert sizes == [1, 3, 8, 9, 18]
    assert ledger.root() == ledger.checkpoints()[-1].root
    anchored = Anchor(anchor_folder(gateway.home)).all(private.public_key(), ORIGIN)
    assert [a.checkpoint.size for a in anchored] == sizes
    assert ledger.verify(public_key=private.public_key(), origin=ORIGIN).handed_out == 5
    sql(gateway.url, "UPDATE audit_ledger SET body = :body WHERE seq = 4", body='{"n":0}')
    assert ledger.verify().reason == "content altered (hash mismatch)"
    ledger.close()


# -- verify without a key says so ------------------------------------------------------------------


def test_verify_without_a_key_says_it_did_not_check_signatures(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(gateway.url, 4)
    assert exchange(capsys, "audit", "checkpoint")[0] == cli.OK
    gateway.public.rename(gateway.home / "elsewhere.pub")  # no key beside the signing key
    monkeypatch.setenv("EXCHANGE_HOME", str(gateway.home / "other"))  # and no anchor
    code, out, err = exchange(capsys, "audit", "verify")
    assert code == cli.OK
    assert "signatures NOT checked" in out and "signed" not in out.replace("NOT checked", "")
    assert "entries 1..4 signed" not in out
    assert "no public key: checkpoint signatures were NOT checked" in err
    assert "no checkpoints kept outside the database" in err


# -- the origin is pinned --------------------------------------------------------------------------


def test_a_checkpoint_of_another_log_signed_with_our_key_is_refused(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fill(gateway.url, 3)
    private = load_private_key(gateway.key_path)
    ledger = Ledger(gateway.url)
    other = sign_checkpoint("staging-log.example/audit", 3, ledger.root(), private)
    ledger.close()
    sql(
        gateway.url,
        "INSERT INTO audit_checkpoints (tree_size, root, note, created_at) "
        "VALUES (3, :root, :note, '2026-01-01')",
        root=other.root_hex,
        note=other.note,
    )
    code, _, err = exchange(capsys, "audit", "verify", "--public-key", str(gateway.public))
    assert code == cli.NOT_VERIFIED
    assert "from origin 'staging-log.example/audit', not 'exchange-gateway/" in refusal(err)
    code, _, err = exchange(capsys, "audit", "checkpoint")
    assert code == cli.NOT_VERIFIED and "will not sign" in refusal(err)
    held = tmp_path / "held.note"
    held.write_text(other.note)
    sql(gateway.url, "DELETE FROM audit_checkpoints")
    code, _, err = exchange(
        capsys, "audit", "verify", "--public-key", str(gateway.public), "--held", str(held)
    )
    assert code == cli.NOT_VERIFIED
    assert refusal(err).startswith("exchange: ledger broken: held checkpoint 1: checkpoint is from")


# -- disclosures are bound to the chain ------------------------------------------------------------


def deliver(gateway: Gateway, drop: str, subjects: list[str], at: dt.datetime) -> None:
    """Record a drop as the gateway does: disclosures, run.prepared with their digest, then
    mark it sent and append transfer.sent with the facts."""
    store = Disclosures(gateway.url, DISCLOSURE_KEY)
    facts = Disclosure(
        drop,
        "school-attendance-to-early-help",
        "1.2.0",
        RECIPIENT,
        ("safeguarding",),
        "Children Act 2004 s.10",
        ("person_ref", "attendance_rate"),
        sent_at=None,
        run_id=f"run-{drop}",
    )
    recorded = store.record(facts, pa.array(subjects))
    ledger = Ledger(gateway.url)
    ledger.append(
        "run.prepared",
        {"drop_id": drop, "disclosures": recorded.as_dict()},
        run_id=facts.run_id,
        contract_id=facts.contract_id,
    )
    store.mark_sent(drop, at)
    ledger.append(
        "transfer.sent",
        {
            "drop_id": drop,
            "id": facts.contract_id,
            "version": facts.contract_version,
            "recipient": RECIPIENT,
            "purposes": list(facts.purposes),
            "legal_basis": facts.legal_basis,
            "fields_sent": list(facts.fields),
        },
        run_id=facts.run_id,
        contract_id=facts.contract_id,
    )
    ledger.close()
    store.close()


@pytest.fixture
def delivered(gateway: Gateway) -> Gateway:
    t0 = dt.datetime(2026, 11, 1, 2, tzinfo=dt.UTC)
    deliver(gateway, "drop-a", SUBJECTS[:30], t0)
    deliver(gateway, "drop-b", SUBJECTS[20:], t0 + dt.timedelta(days=1))
    return gateway


def ask(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, subject: str, *extra: str
) -> tuple[int, str, str]:
    """`exchange audit subject --id-file -` with the id typed on standard input."""
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(subject + "\n"))
    return exchange(capsys, "audit", "subject", "--id-file", "-", "--reason", "SAR-test", *extra)


def transfer_id(url: str, drop: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT id FROM transfers WHERE drop_id = :d"), {"d": drop}
        ).scalar_one()
    engine.dispose()
    return int(found)


def hash_of(subject: str) -> bytes:
    from exchange.audit.disclosures import subject_hash

    return subject_hash(DISCLOSURE_KEY, subject)


def test_a_subject_lookup_is_answered_after_checking_and_is_audited(
    delivered: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = ask(capsys, monkeypatch, "P00025", "--reason", "SAR-2026-017")
    assert code == cli.OK, err
    assert "drop drop-a" in out and "drop drop-b" in out
    assert "checked against the audit ledger:" in out and "P00025" not in err + out
    last = list(Ledger(delivered.url).entries())[-1]
    assert last.event == "subject.looked_up"
    assert last.data["subject_hash"] == lookup_hash(DISCLOSURE_KEY, "P00025")
    assert last.data["key_id"] == key_id(DISCLOSURE_KEY)
    assert (last.data["reason"], last.data["outcome"], last.data["drops"]) == (
        "SAR-2026-017",
        "answered",
        2,
    )
    assert last.data["requested_by"]
    assert "P00025" not in last.body
    # The positional form still works, with a warning; neither form is a usage error.
    code, out, err = exchange(
        capsys, "audit", "subject", "P00001", "--format", "json", "--reason", "SAR-test"
    )
    assert code == cli.OK and [d["drop_id"] for d in json.loads(out)] == ["drop-a"]
    assert "visible in ps and shell history" in err
    code, _, err = exchange(capsys, "audit", "subject", "--reason", "SAR-test")
    assert code == cli.BAD_INPUT and "--id-file" in err


def test_a_forged_disclosure_row_is_refused(
    delivered: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claim that drop-b also carried P00001 (an insert with SQL): the answer is refused."""
    sql(
        delivered.url,
        "INSERT INTO disclosures (subject_hash, transfer_id) VALUES (:h, :t)",
        h=hash_of("P00001"),
        t=transfer_id(delivered.url, "drop-b"),
    )
    code, out, err = ask(capsys, monkeypatch, "P00001")
    assert code == cli.NOT_VERIFIED and out == ""
    assert refusal(err) == (
        "exchange: not verified: the disclosure record does not match the audit ledger: "
        "drop drop-b: its 21 subject rows differ from the 20 its run.prepared entry binds "
        "(rows added, altered or deleted)"
    )
    last = list(Ledger(delivered.url).entries())[-1]
    assert (last.event, last.data["outcome"]) == ("subject.looked_up", "refused")


def test_a_deleted_disclosure_row_is_refused_even_for_another_subject(
    delivered: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hide that drop-a carried P00025: asking about P00025 (or anyone) is refused."""
    sql(
        delivered.url,
        "DELETE FROM disclosures WHERE subject_hash = :h AND transfer_id = :t",
        h=hash_of("P00025"),
        t=transfer_id(delivered.url, "drop-a"),
    )
    for who in ("P00025", "P00002"):
        code, _, err = ask(capsys, monkeypatch, who)
        assert code == cli.NOT_VERIFIED
        assert "drop drop-a: its 29 subject rows differ from the 30" in refusal(err)


def test_a_deleted_or_forged_transfer_and_altered_facts_are_refused(
    delivered: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(delivered.url, "UPDATE transfers SET recipient = 'Someone Else' WHERE drop_id = 'drop-a'")
    code, _, err = ask(capsys, monkeypatch, "P00003")
    assert code == cli.NOT_VERIFIED
    assert "drop drop-a: its agreement, recipient, purposes" in refusal(err)
    sql(delivered.url, "UPDATE transfers SET recipient = :r", r=RECIPIENT)
    assert ask(capsys, monkeypatch, "P00003")[0] == cli.OK
    tid = transfer_id(delivered.url, "drop-b")
    sql(
        delivered.url,
        "DELETE FROM disclosures WHERE transfer_id = :t",
        "DELETE FROM transfers WHERE id = :t",
        t=tid,
    )
    code, _, err = ask(capsys, monkeypatch, "P00035")
    assert code == cli.NOT_VERIFIED
    assert refusal(err).endswith(
        "drop drop-b: delivered per the audit ledger, but its disclosure record is missing "
        "(deleted)"
    )


def test_a_rewritten_ledger_refuses_subject_lookups(
    delivered: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forge a whole drop: disclosure rows and a matching run.prepared entry, re-chained."""
    assert exchange(capsys, "audit", "checkpoint")[0] == cli.OK
    entries = list(Ledger(delivered.url).entries())
    prepared = next(e for e in entries if e.event == "run.prepared" and "drop-b" in e.body)
    tid = transfer_id(delivered.url, "drop-b")
    sql(
        delivered.url,
        "INSERT INTO disclosures (subject_hash, transfer_id) VALUES (:h, :t)",
        h=hash_of("P00001"),
        t=tid,
    )
    store = Disclosures(delivered.url, DISCLOSURE_KEY)
    digest = store.transfer("drop-b")
    assert digest is not None
    from exchange.audit.disclosures import sorted_hashes

    hashes, _ = sorted_hashes(DISCLOSURE_KEY, pa.array([*SUBJECTS[20:], "P00001"]))
    forged = __import__("hashlib").sha256(hashes.tobytes()).hexdigest()
    store.close()
    sql(
        delivered.url,
        "UPDATE transfers SET subjects = 21, digest = :d WHERE id = :t",
        "DELETE FROM audit_checkpoints",
        d=forged,
        t=tid,
    )
    body = {
        "drop_id": "drop-b",
        "disclosures": {"subjects": 21, "digest": forged, "key_id": key_id(DISCLOSURE_KEY)},
    }
    rechain(delivered.url, seq=prepared.seq, body=body)
    code, _, err = ask(capsys, monkeypatch, "P00001")
    assert code == cli.NOT_VERIFIED
    assert refusal(err).startswith(
        "exchange: not verified: the audit ledger does not verify (entry 1: entries 1..4 "
        "differ from handed-out checkpoint (size 4)"
    )


def test_the_anchor_files_are_private_and_never_followed_through_a_symlink(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(gateway.url, 2)
    folder = anchor_folder(gateway.home)
    folder.mkdir(parents=True)
    target = tmp_path / "victim"
    target.write_text("keep\n")
    os.symlink(target, folder / "log.jsonl")
    code, _, err = exchange(capsys, "audit", "checkpoint")
    assert code == cli.NOT_VERIFIED and target.read_text() == "keep\n"
    assert refusal(err).startswith("exchange: not verified: cannot read the checkpoints handed")
