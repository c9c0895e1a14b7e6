"""Errors that name the cause and the next step, for IG officers and auditors (issue 17): the
Schedule 1 hint for each Article 9 condition, the statutory powers table lint points to, a
missing vs wrong passphrase, and a wrong public key vs a tampered ledger (and which ledger)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Workspace, write_contract

from exchange import approval, cli, keys
from exchange.audit import Ledger
from exchange.cli.auditors import ledger_name
from exchange.contract import legal
from exchange.contract.vocabulary import generate
from exchange.crypto.signing import key_id, load_public_key
from exchange.settings import Settings

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The real command in-process: exit code, standard output, standard error."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def legal_basis(**changes: Any) -> Any:
    def edit(document: dict[str, Any]) -> None:
        for prop in document["customProperties"]:
            if prop["property"] == "legalBasis":
                for name, value in changes.items():
                    if value is None:
                        prop["value"].pop(name, None)
                    else:
                        prop["value"][name] = value

    return edit


def lint(tmp_path: Path, capsys: pytest.CaptureFixture[str], **changes: Any) -> str:
    path = write_contract(tmp_path / "c.yaml", RECIPIENT, legal_basis(**changes))
    code, out, err = run(capsys, "contract", "lint", str(path))
    assert code == cli.BAD_INPUT, out + err
    return err


# -- the Schedule 1 hint for each Article 9 condition ----------------------------------------------


@pytest.mark.parametrize(
    ("article9", "hint"),
    [
        ("9(2)(b)", "'Part 1 para 1 (employment, social security and social protection)'"),
        ("9(2)(h)", "'Part 1 para 2 (health or social care purposes)'"),
        ("9(2)(i)", "'Part 1 para 3 (public health)'"),
        ("9(2)(j)", "'Part 1 para 4 (research etc)'"),
        ("9(2)(g)", "a Part 2 condition, e.g. 'Part 2 para "),
    ],
)
def test_lint_suggests_the_schedule_1_condition_of_each_article_9_condition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], article9: str, hint: str
) -> None:
    missing = lint(tmp_path, capsys, ukGdprArticle9=article9, dpa2018Schedule1=None)
    assert f"Article {article9} needs a DPA 2018 Schedule 1 condition" in missing
    assert hint in missing, missing
    # The same hint when the condition given is another Article 9 condition's.
    other = "Part 2 para 18" if article9 != "9(2)(g)" else "Part 1 para 3"
    mispaired = lint(tmp_path, capsys, ukGdprArticle9=article9, dpa2018Schedule1=other)
    assert f"no Schedule 1 condition given meets Article {article9}: it needs {hint}" in mispaired
    if article9 == "9(2)(h)":
        assert "para 18" not in missing  # the 9(2)(g) condition is not suggested for (h)


def test_each_suggested_condition_meets_its_article_9_condition() -> None:
    for code, example in legal.SCHEDULE_1_EXAMPLE.items():
        found = legal.schedule_1_condition(example)
        assert found is not None and legal.pairs(code, found), (code, example)


# -- an unknown statute points to a table that exists ----------------------------------------------


def test_an_unknown_statute_points_to_the_statutory_powers_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statutes = [{"act": "Children Act 1989", "section": "s.999"}]
    err = lint(tmp_path, capsys, statutes=statutes)
    assert "unknown legal basis Children Act 1989 s.999" in err
    assert "the table 'Statutory powers' in docs/contracts.md" in err
    docs = (REPO / "docs/contracts.md").read_text("utf-8")
    assert "\n### Statutory powers\n" in docs
    table = docs.split("<!-- generated: powers -->\n", 1)[1].split("<!-- end generated -->")[0]
    assert table == generate.powers_table() + "\n"
    for power in legal.STATUTES:
        assert f"| {power.act} | {power.section} | {power.description} |" in table
    assert (
        "| Care Act 2014 | s.42 | Enquiry by local authority (safeguarding adults) | yes |" in table
    )


# -- a missing passphrase, a wrong one, and a file that is not a key -------------------------------


def approve(
    capsys: pytest.CaptureFixture[str], w: Workspace, key: Path, *extra: str
) -> tuple[int, str]:
    approval.approval_path(w.contract).unlink(missing_ok=True)
    code, _, err = run(capsys, "contract", "approve", str(w.contract), "--key", str(key), *extra)
    return code, err


def test_a_missing_a_wrong_passphrase_and_not_a_key_are_told_apart(
    gateway_env: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = gateway_env
    pair = keys.generate("signing", w.root / "pp.key", passphrase=b"correct horse")
    monkeypatch.setenv("PASS", "wrong")
    code, err = approve(capsys, w, pair.private_path)
    assert code != cli.OK
    assert f"signing key {pair.private_path} is encrypted: give its passphrase" in err
    assert "(--ask-passphrase or --passphrase-env VAR)" in err
    code, err = approve(capsys, w, pair.private_path, "--passphrase-env", "PASS")
    assert code != cli.OK
    assert f"signing key {pair.private_path}: the passphrase is wrong" in err
    junk = w.root / "junk.key"
    junk.write_text("not a key\n")
    junk.chmod(0o600)
    code, err = approve(capsys, w, junk)
    assert code != cli.OK
    assert f"signing key {junk} is unreadable: it is not a readable private key" in err
    assert "passphrase" not in err.replace(str(junk), "")


# -- a wrong public key is not a broken ledger; verify names the ledger ----------------------------


def test_a_wrong_public_key_is_not_reported_as_a_broken_ledger(
    gateway_env: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env()
    db = settings.home / "audit.db"
    ledger = Ledger(settings.audit_url)
    for n in range(1, 4):
        ledger.append("step", {"n": n}, run_id=f"run-{n}", contract_id="c-1")
    ledger.close()
    assert run(capsys, "audit", "checkpoint")[0] == cli.OK
    gateway = Path(f"{settings.signing_key}.pub")
    code, out, _ = run(capsys, "audit", "verify", "--public-key", str(gateway))
    assert code == cli.OK and out.startswith("OK: ")
    assert f"(ledger {db})" in out

    other = keys.generate("signing", gateway_env.root / "other.key").public_path
    code, out, err = run(capsys, "audit", "verify", "--public-key", str(other))
    assert code == cli.NOT_VERIFIED and out == ""
    assert "ledger broken" not in err
    assert (
        "checkpoint signatures do not verify under the key given "
        f"({key_id(load_public_key(other))}): is it the gateway's public key? "
        f"The signing key's id is {key_id(load_public_key(gateway))}"
    ) in err
    assert f"(ledger {db})" in err

    # Real tampering is still a broken ledger, with the right key or a wrong one.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_ledger SET body = replace(body, '}', ',\"x\":1}') WHERE seq = 1")
    for key in (gateway, other):
        code, out, err = run(capsys, "audit", "verify", "--public-key", str(key))
        assert code == cli.NOT_VERIFIED, out + err
        assert "exchange: ledger broken: entry 1" in err and f"(ledger {db})" in err


def test_a_ledger_url_is_named_with_its_password_masked() -> None:
    named = ledger_name("postgresql+psycopg://auditor:s3cret@db.example:5432/exchange")
    assert "s3cret" not in named and "db.example:5432/exchange" in named and "***" in named
    assert ledger_name("sqlite:///relative/audit.db") == str(Path("relative/audit.db").absolute())
