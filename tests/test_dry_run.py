"""`exchange run --dry-run`: try a contract against a source before it is approved (issue 17).

Driven through the real command from a fresh home folder: no signing key, no secrets, no
approval, no ledger. It must count, name unknown columns, and point at failing rows by their
line in the source without ever printing a value, and leave nothing behind.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import Workspace, write_contract

from exchange import cli, synth
from exchange.audit import Ledger
from exchange.pipeline.dryrun import csv_lines

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
ODD = "QQ-odd-value"  # a value that must never appear in any output


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data team's first hour: a draft contract and a source, and nothing else set up."""
    for name in list(os.environ):
        if name.startswith("EXCHANGE_"):
            monkeypatch.delenv(name)
    (tmp_path / "contracts").mkdir()
    (tmp_path / "sources").mkdir()
    write_contract(
        tmp_path / "contracts" / "attendance.yaml", RECIPIENT, lambda d: d.update(status="draft")
    )
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path / "home"))  # never created
    monkeypatch.setenv("EXCHANGE_CONTRACTS", str(tmp_path / "contracts"))
    monkeypatch.setenv("EXCHANGE_SOURCE_DIR", str(tmp_path / "sources"))
    monkeypatch.setenv("EXCHANGE_APPROVERS", str(tmp_path / "no-approvers.json"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def rewrite(path: Path, edit: Any) -> None:
    """Edit a CSV's rows (a list of lists, header first) and write it back."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_a_draft_dry_runs_with_no_approval_key_or_secret_and_leaves_nothing(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synth.write(fresh / "sources" / "attendance_export.csv", 400, seed=3)
    before = files(fresh)
    code, out, err = run(capsys, "run", "contracts/attendance.yaml", "--dry-run")
    assert code == cli.OK, err
    assert err == ""
    objecting = int(
        pacsv.read_csv(fresh / "sources" / "attendance_export.csv")
        .column("objection")
        .to_pylist()
        .count(True)
    )
    assert objecting > 0
    assert f"read 400 rows, would send {400 - objecting}, excluded {objecting} objection" in out
    assert (
        "source columns the contract does not know (not read): nhs_number, first_name, "
        "last_name, address_line, notes, last_updated"
    ) in out
    assert "note: the contract is 'draft': a real run needs it 'active' and approved" in out
    assert "pseudonyms come from a throwaway key" in out
    assert "quality: every rule passed" in out
    assert out.rstrip().endswith(f"would pass: a real run would send {400 - objecting} rows")
    assert files(fresh) == before  # no home, ledger, staging, quarantine or key was made
    assert not (fresh / "home").exists()


def test_failing_rules_give_counts_and_source_lines_never_values(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fresh / "sources" / "attendance_export.csv"
    synth.write(source, 300, seed=5)

    def faults(rows: list[list[str]]) -> None:
        header = rows[0]
        col = {name: header.index(name) for name in header}
        for row in rows[1:]:
            row[col["objection"]] = "false"
        rows[2][col["notes"]] = "first line\nsecond line"  # data row 1 spans lines 3 and 4
        rows[3][col["objection"]] = "true"  # data row 2 is left out: rows shift after it
        rows[5][col["gender"]] = ODD  # data row 4: line 7
        rows[9][col["gender"]] = ODD  # data row 8: line 11
        rows[12][col["attendance_rate"]] = "140.5"  # data row 11: line 14
        rows[20][col["person_id"]] = rows[21][col["person_id"]]  # a duplicate subject

    rewrite(source, faults)
    before = files(fresh)
    code, out, err = run(capsys, "run", "attendance", "--dry-run", "--source", source.name)
    assert code == cli.REFUSED, out + err
    assert "read 300 rows, would send 299, excluded 1 objection" in out
    assert (
        "would fail: gender: in_set failed for 2 of 299 rows "
        "(schema[0].properties[3].quality[0]); first at source lines 7, 11"
    ) in out
    assert (
        "would fail: attendance_rate: between failed for 1 of 299 rows "
        "(schema[0].properties[6].logicalTypeOptions); first at source line 14"
    ) in out
    assert "would fail: person_ref: unique failed for 1 of 299 rows (whole run" in out
    assert err.strip() == (
        "exchange: refused: a real run would be refused: 3 quality rule(s) would fail; "
        "nothing was sent"
    )
    assert ODD not in out + err and "140.5" not in out + err
    assert files(fresh) == before


def test_rows_are_not_located_when_a_filter_reads_the_subject_column(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Locating rows leans on the subject column; a filter on it makes that unsafe, so the
    count is given without lines rather than with wrong ones."""
    source = fresh / "sources" / "attendance_export.csv"
    synth.write(source, 60, seed=4)
    with source.open(newline="") as handle:
        rows = list(csv.reader(handle))
    first_id = rows[1][rows[0].index("person_id")]

    def edit(document: dict[str, Any]) -> None:
        document["customProperties"].append(
            {
                "property": "filters",
                "value": [{"column": "person_id", "op": "!=", "value": first_id, "name": "x"}],
            }
        )

    write_contract(fresh / "contracts" / "attendance.yaml", RECIPIENT, edit)
    rewrite(source, lambda rows: rows[6].__setitem__(rows[0].index("gender"), ODD))
    code, out, _ = run(capsys, "run", "attendance", "--dry-run")
    assert code == cli.REFUSED
    assert "excluded" in out and "filter:x" in out, out
    assert "gender: in_set failed for 1 of" in out
    assert "its rows could not be located" in out and "source line" not in out
    assert first_id not in out and ODD not in out


def test_the_line_numbers_are_the_lines_in_the_file(fresh: Path) -> None:
    path = fresh / "lines.csv"
    path.write_text('a,b\n1,x\n2,"two\nlines"\n\n3,z\n4,"y"\n')
    assert csv_lines(path, [0, 1, 2, 3]) == {0: 2, 1: 3, 2: 6, 3: 7}
    # Where pyarrow sees rows, csv_lines agrees (the blank line is skipped by both).
    assert pacsv.read_csv(path).column("a").to_pylist() == [1, 2, 3, 4]


def test_a_parquet_source_is_located_by_row(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fresh / "sources" / "attendance_export.csv"
    synth.write(source, 50, seed=2)
    rewrite(source, lambda rows: rows[4].__setitem__(rows[0].index("gender"), ODD))
    table = pacsv.read_csv(source)
    source.unlink()
    pq.write_table(table, fresh / "sources" / "attendance_export.parquet")
    code, out, _ = run(capsys, "run", "attendance", "--dry-run")
    assert code == cli.REFUSED
    assert "gender: in_set failed for 1 of" in out
    assert "first at source row 4" in out, out  # the 4th data row (a Parquet file has no lines)
    assert ODD not in out


def test_a_missing_column_is_named_and_stops_the_dry_run(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fresh / "sources" / "attendance_export.csv"
    synth.write(source, 20, seed=1)
    rewrite(source, lambda rows: rows[0].__setitem__(rows[0].index("gender"), "sex"))
    code, out, err = run(capsys, "run", "attendance", "--dry-run")
    assert code == cli.BAD_INPUT and out == ""
    assert err.startswith("exchange: source: source attendance_export.csv is missing column(s)")
    assert err.rstrip().endswith("the contract needs: gender")


def test_a_dry_run_of_an_approved_contract_records_nothing(
    workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even where the gateway is set up, a dry run leaves the ledger, disclosures and
    incidents untouched."""
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    source = workspace.source(120)
    ledger = Ledger(workspace.settings.audit_url)
    ledger.append("step", {"n": 1}, run_id="r", contract_id="c")
    head = ledger.head()
    ledger.close()
    before = files(workspace.settings.home)
    code, out, err = run(
        capsys, "run", str(workspace.contract), "--dry-run", "--source", str(source)
    )
    assert code == cli.OK, err
    assert "read 120 rows" in out and "note: the contract is" not in out
    # No staging or quarantine; the ledger's own files are judged by its head (SQLite may fold
    # its write-ahead log into the database when the test's connection is collected).
    after = files(workspace.settings.home)
    assert {k for k in after if "audit.db" not in k} == {k for k in before if "audit.db" not in k}
    ledger = Ledger(workspace.settings.audit_url)
    assert ledger.head() == head
    ledger.close()


def test_a_run_id_with_dry_run_is_refused_before_anything_is_read(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run records nothing, so it has no run id: given one, the user most likely meant
    to retry that run, so the command says so instead of quietly trying the contract."""
    synth.write(fresh / "sources" / "attendance_export.csv", 50, seed=2)
    before = files(fresh)
    for argv in (
        ("run", "attendance", "--dry-run", "--run-id", "manual__retry-1"),
        ("run", "attendance", "--run-id", "manual__retry-1", "--dry-run"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == cli.BAD_INPUT == 2
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith("exchange: not done: --run-id 'manual__retry-1' with --dry-run")
        assert "leave out --run-id" in err and "--dry-run to retry that run" in err
    assert files(fresh) == before  # nothing read into, written or recorded
    # Without --run-id the same dry run goes ahead.
    code, out, _ = run(capsys, "run", "attendance", "--dry-run")
    assert code == cli.OK and "read 50 rows" in out
