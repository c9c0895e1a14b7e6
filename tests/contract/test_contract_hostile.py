"""Hostile contracts through the real CLI: each attack is refused with a clear one-line error.

Contract authors and committers are trusted to propose agreements, never to choose paths or to
make the gateway run something other than what a reviewer reads (DESIGN.md sections 3 and 11;
issue 10, defects 10-12). Every test here performs one attack: `contract lint`, `run`,
`render` and `register` must refuse it with FILE: PATH: message lines and a non-zero exit, never
a traceback, and a secret key pasted into a contract must never be echoed or stored.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml
from conftest import SAMPLE, Workspace, write_contract

from exchange import cli
from exchange.contract import load_contract
from exchange.contract.safe_yaml import MAX_BYTES
from exchange.errors import ContractError

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
SECRET = str(pyrage.x25519.Identity.generate())  # a real age secret key, made for this run
OPENSSH_PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
TEXT = SAMPLE.read_text("utf-8")

Edit = Callable[[dict[str, Any]], None]


def term(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The top-level customProperties item named `name`."""
    return next(p for p in document["customProperties"] if p["property"] == name)


def written(tmp_path: Path, text: str, name: str = "hostile.yaml") -> Path:
    """Contract text written as a file."""
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def replaced(old: str, new: str) -> str:
    """The sample's text with one exact passage replaced (so layout stays the author's)."""
    assert TEXT.count(old) == 1, old
    return TEXT.replace(old, new)


def edited(tmp_path: Path, edit: Edit, name: str = "hostile.yaml") -> Path:
    """The sample contract, edited as a document, written to a new file."""
    return write_contract(tmp_path / name, RECIPIENT, edit)


def lint(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`exchange contract lint PATH`: exit code, stdout, stderr."""
    capsys.readouterr()
    code = cli.main(["contract", "lint", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(
    code: int, out: str, err: str, path: Path, where: str, fragment: str, *, secret: str = ""
) -> None:
    """A non-zero exit, and FILE: WHERE: message lines naming the problem; no traceback."""
    assert code == cli.BAD_INPUT, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if not line.startswith("exchange: ")]
    assert lines, err
    assert all(line.startswith(f"{path}: ") for line in lines), err
    assert any(line.startswith(f"{path}: {where}") and fragment in line for line in lines), err
    if secret:
        assert secret not in out + err
        assert secret.lower() not in (out + err).lower()


# --- defect 10: YAML a reviewer cannot read as it runs ----------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def test_an_alias_bomb_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A few hundred bytes that expand to 9**9 (~387 million) nodes are refused, not expanded."""
    path = written(tmp_path, BOMB)
    assert len(BOMB) < 500
    started = time.perf_counter()
    code, out, err = lint(path, capsys)
    assert time.perf_counter() - started < 2
    assert_refused(code, out, err, path, "line 1, column 4", "anchors (&name) are not allowed")


def test_an_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A value that repeats another by alias is refused: write it out in full."""
    path = written(tmp_path, TEXT + "extra: *undefined\n")
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "line ", "aliases (*name) are not allowed")


def test_a_duplicate_key_cannot_hide_the_transform_that_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reviewers read 'postcode-district'; YAML would run the last value: full postcodes."""
    text = replaced(
        "            value: postcode-district\n",
        "            value: postcode-district\n            value: keep\n",
    )
    path = written(tmp_path, text)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "line ", "duplicate key 'value' (first on line")
    assert "schema[0].properties[2].customProperties[0]" in err


def test_a_duplicate_key_cannot_quietly_override_objections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Visible terms keep objections; a second key further down would send every objecting row."""
    text = replaced(
        "      legalBasisOverrides: false\n",
        "      legalBasisOverrides: false\n      column: objection\n"
        "      legalBasisOverrides: true\n",
    )
    path = written(tmp_path, text)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "line ", "duplicate key 'column'")


def test_keys_that_mean_the_same_are_duplicates(tmp_path: Path) -> None:
    """`true` and `"True"` are one key once the contract is in its canonical form."""
    path = written(tmp_path, TEXT + "true: 1\n'True': 2\n")
    with pytest.raises(ContractError, match="duplicate key 'True'"):
        load_contract(path)


def test_a_merge_key_is_refused(tmp_path: Path) -> None:
    """`<<` merges keys a reviewer does not see where they apply."""
    path = written(tmp_path, TEXT + "extra: {<<: {a: 1}, b: 2}\n")
    with pytest.raises(ContractError, match=r"merge keys \(<<\) are not allowed"):
        load_contract(path)


@pytest.mark.parametrize("tag", ["!!binary aGVsbG8=", "!!set {a, b}", "!custom x", "!!omap []"])
def test_tags_beyond_plain_types_are_refused(tmp_path: Path, tag: str) -> None:
    """Only text, numbers, true/false, lists and mappings: no bytes, sets or custom types."""
    path = written(tmp_path, TEXT + f"extra: {tag}\n")
    with pytest.raises(ContractError, match=r"YAML tag .* is not allowed"):
        load_contract(path)


def test_a_duplicated_retention_entry_is_refused_by_lint_and_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two retention periods: diff compared one, the gateway used the other. Now both refuse."""
    text = replaced(
        "  - property: frequency\n",
        "  - property: retention\n    value: 20\n    unit: y\n  - property: frequency\n",
    )
    path = written(tmp_path, text)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "slaProperties[1].property", "duplicate property")
    capsys.readouterr()
    code = cli.main(["contract", "diff", str(SAMPLE), str(path)])
    out, err = capsys.readouterr()
    assert code == cli.BAD_INPUT
    assert "identical" not in out
    assert f"{path}: slaProperties[1].property: duplicate property 'retention'" in err


def test_retention_given_per_element_is_still_one_period(tmp_path: Path) -> None:
    """A second retention entry for another `element` is refused too: one period binds."""

    def edit(d: dict[str, Any]) -> None:
        d["slaProperties"].append(
            {"property": "retention", "value": 9, "unit": "y", "element": "x"}
        )

    with pytest.raises(ContractError, match="a second retention period") as caught:
        load_contract(edited(tmp_path, edit))
    assert caught.value.problems[0].path == "slaProperties[2]"


@pytest.mark.parametrize(
    ("where", "old", "new"),
    [
        (
            "customProperties[3].property",
            "  - property: legalBasis\n",
            "  - property: purposes\n    value: [research]\n  - property: legalBasis\n",
        ),
        (
            "schema[0].properties[2].customProperties[1].property",
            "            value: postcode-district\n",
            "            value: postcode-district\n          - property: transform\n"
            "            value: keep\n",
        ),
        (
            "servers[0].customProperties[1].property",
            "        description: The partner's SFTP host key, as Early Help's IT team "
            "published it.\n",
            "      - property: hostKeys\n        value: []\n",
        ),
    ],
)
def test_a_duplicate_property_entry_is_refused_wherever_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, old: str, new: str
) -> None:
    """In any customProperties list, a repeated `property` is refused at the repeat."""
    path = written(tmp_path, replaced(old, old + new if "description" in old else new))
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, where, "duplicate property")


def test_a_20_mb_contract_is_refused_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Size is capped before parsing: 20 MB is refused in well under a second."""
    path = written(tmp_path, TEXT + "# padding\n" * (2 * 1024 * 1024))
    assert path.stat().st_size > 20 * 1024 * 1024
    started = time.perf_counter()
    code, out, err = lint(path, capsys)
    assert time.perf_counter() - started < 1
    assert_refused(code, out, err, path, "", f"larger than {MAX_BYTES // 1024} KiB")


def test_many_nodes_are_refused_before_checking(tmp_path: Path) -> None:
    """Under the size cap, a flood of tiny nodes is still refused quickly."""
    path = written(tmp_path, TEXT + "tags2: [" + ",".join(["1"] * 60_000) + "]\n")
    started = time.perf_counter()
    with pytest.raises(ContractError, match="more than 50000 YAML nodes"):
        load_contract(path)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("depth", "fragment"),
    [(100, "nested more than 32 deep"), (5000, "exceeded maximum nesting depth")],
)
def test_deep_nesting_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int, fragment: str
) -> None:
    """Nesting is capped (by the loader, and by libyaml beyond 1000), so nothing recurses deep."""
    path = written(tmp_path, TEXT + "extra: " + "[" * depth + "]" * depth + "\n")
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "line ", fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"id: \xff\xfe\n", "not UTF-8 text"),
        (b'id: "a\x01"\n', "control characters are not allowed"),
        (b"- a\n- b\n", "a contract must be a YAML mapping"),
        (b"a: 1\n---\nb: 2\n", "expected a single document"),
    ],
)
def test_malformed_files_are_one_clear_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, fragment: str
) -> None:
    """Bytes that are not one YAML mapping give one problem line, not a traceback."""
    path = tmp_path / "malformed.yaml"
    path.write_bytes(content)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "", fragment)


# --- defect 11/12: names that become paths ----------------------------------------------------

UNSAFE_IDS = ["../../outside", "/etc/cron.d/x", "a\x00b", "a/b", "UPPER", "-leading", "a" * 65, 7]


@pytest.mark.parametrize("contract_id", UNSAFE_IDS, ids=repr)
def test_an_unsafe_contract_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], contract_id: Any
) -> None:
    """Ids name staged drops, ledger entries and DAGs: only lower-case letters, digits, '-'."""

    def edit(d: dict[str, Any]) -> None:
        d["id"] = contract_id

    path = edited(tmp_path, edit)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "id", "lower-case letters, digits and hyphens")
    assert "\x00" not in err


UNSAFE_LOCATIONS = {
    "dotdot": ("sftp://partner.example/inbox/../../etc", "'..'"),
    "absolute": ("sftp://partner.example//etc/ssh", "relative to the SFTP login folder"),
    "home": ("sftp://partner.example/~/.ssh", "relative to the SFTP login folder"),
    "encoded": ("sftp://partner.example/inbox/%2e%2e/x", "control character"),
    "tab hidden": ("sftp://partner.example/inbox/.\t./x", "control characters"),
    "nul": ("sftp://partner.example/inbox\x00/x", "control characters"),
    "backslash": ("sftp://partner.example/inbox\\..\\x", "'\\'"),
    "dot": ("sftp://partner.example/./inbox", "must be folder names"),
    "credentials": ("sftp://user:pw@partner.example/inbox", "must not carry a user"),
    "query": ("sftp://partner.example/inbox?x=1", "query or fragment"),
    "scheme": ("file:///etc/inbox", "must be sftp://HOST/FOLDER"),
    "bad ipv6": ("sftp://[::1/inbox", "not a valid URL"),
    "pattern": ("sftp://partner.example/inbox/*", "not a pattern"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_LOCATIONS))
def test_an_unsafe_server_location_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """The drop lands in the named folder or nowhere: no '..', absolute or hidden tricks."""
    location, fragment = UNSAFE_LOCATIONS[case]

    def edit(d: dict[str, Any]) -> None:
        d["servers"][0]["location"] = location

    path = edited(tmp_path, edit)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "servers[0].location", fragment)


@pytest.mark.parametrize(
    "name", ["../secrets", "/etc/passwd", "a/b", "exp*", "a..b", "a b", "", "a.b.c", ".hidden"]
)
def test_an_unsafe_source_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """physicalName picks the source file or table: it cannot reach outside the source folder."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["physicalName"] = name

    path = edited(tmp_path, edit)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "schema[0].physicalName", "file stem or table name")


def test_a_dataset_name_without_physical_name_must_be_a_safe_source_name(tmp_path: Path) -> None:
    """With no physicalName the dataset's name is the source's, so it must be safe too."""

    def edit(d: dict[str, Any]) -> None:
        del d["schema"][0]["physicalName"]
        d["schema"][0]["name"] = "../pupils"

    with pytest.raises(ContractError, match="set physicalName") as caught:
        load_contract(edited(tmp_path, edit))
    assert caught.value.problems[0].path == "schema[0].name"


def test_safe_names_still_load(tmp_path: Path) -> None:
    """A schema-qualified table and a nested folder are fine."""

    def edit(d: dict[str, Any]) -> None:
        d["id"] = "a1-b2"
        d["schema"][0]["physicalName"] = "education.attendance_export"
        d["servers"][0]["location"] = "sftp://10.0.0.7/inbox/early-help/v1.2/"

    contract = load_contract(edited(tmp_path, edit))
    assert contract.id == "a1-b2"
    assert contract.source_name == "education.attendance_export"
    assert contract.endpoint.folder == "inbox/early-help/v1.2"


def test_an_unsafe_acknowledgements_folder_is_refused(tmp_path: Path) -> None:
    """The acknowledgements folder is a remote path too."""

    def edit(d: dict[str, Any]) -> None:
        d["customProperties"].append(
            {
                "property": "acknowledgements",
                "value": {
                    "folder": "../../acks",
                    "partnerKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"],
                    "deadlineHours": 24,
                },
            }
        )

    with pytest.raises(ContractError) as caught:
        load_contract(edited(tmp_path, edit))
    found = {p.path: p.message for p in caught.value.problems}
    assert "'..'" in found["customProperties[14].value.folder"]


# --- secrets pasted into a contract ---------------------------------------------------------


def _secret_recipient(d: dict[str, Any]) -> None:
    term(d, "recipientKeys")["value"] = [SECRET]


def test_lint_refuses_an_age_secret_key_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The secret key where the recipient key belongs is named by its place, never printed."""
    path = edited(tmp_path, _secret_recipient)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "line ", "looks like a secret key", secret=SECRET)
    assert "never put secret keys in a contract" in err


@pytest.mark.parametrize(
    "placement",
    [
        lambda s: replaced("    value: delete\n", f"    value: delete\n    # {s}\n"),  # comment
        lambda s: replaced("  - property: dpiaReference\n", f"  - property: {s.lower()}\n"),
        lambda s: TEXT + f'extra: "\\x{ord(s[0]):02x}{s[1:]}"\n',  # hidden by an escape
        lambda s: TEXT + "extra: |\n  " + OPENSSH_PRIVATE.replace("\n", "\n  ") + "\n",
        lambda s: TEXT + "extra: |\n  -----BEGIN RSA PRIVATE KEY-----\n  MIIB\n",
    ],
    ids=["comment", "lower-case key", "escaped", "openssh", "pem"],
)
def test_no_private_key_anywhere_in_a_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], placement: Callable[[str], str]
) -> None:
    """Anything shaped like a private key, anywhere (even a comment), is refused unechoed."""
    path = written(tmp_path, placement(SECRET))
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, "line ", "looks like a secret key", secret=SECRET)
    assert "PRIVATE KEY" not in err


def test_run_refuses_an_age_secret_key_and_never_stores_it(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`exchange run`: refused, audited as invalid, and the secret is in no output or ledger."""
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    write_contract(workspace.contract, RECIPIENT, _secret_recipient)
    capsys.readouterr()
    code = cli.main(["run", str(workspace.contract), "--source", str(workspace.source(50))])
    out, err = capsys.readouterr()
    assert_refused(
        code, out, err, workspace.contract, "line ", "looks like a secret key", secret=SECRET
    )
    home = Path(workspace.env["EXCHANGE_HOME"])
    for stored in home.rglob("*"):
        if stored.is_file():
            assert SECRET.encode() not in stored.read_bytes(), stored
    ledger = next(home.rglob("*.db"), None) or next(home.rglob("*.sqlite*"))
    with sqlite3.connect(ledger) as db:
        dumped = "\n".join(db.iterdump())
    assert "contract-invalid" in dumped  # the refusal is audited ...
    assert SECRET not in dumped  # ... without the secret


def test_render_and_register_refuse_a_secret_key_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The human-readable pages and the register never carry a pasted secret key."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    path = edited(folder, _secret_recipient)
    capsys.readouterr()
    code = cli.main(["contract", "render", str(path), "--out", str(tmp_path / "pages")])
    out, err = capsys.readouterr()
    assert_refused(code, out, err, path, "line ", "looks like a secret key", secret=SECRET)
    code = cli.main(["contract", "register", str(folder), "--out", str(tmp_path / "register")])
    out, err = capsys.readouterr()
    assert code == cli.OK and "1 invalid" in out
    for page in (tmp_path / "register").rglob("*"):
        if page.is_file():
            assert SECRET not in page.read_text("utf-8")
    assert SECRET not in out + err


def test_a_recipient_key_must_be_an_age_recipient(tmp_path: Path) -> None:
    """A public key of another shape (an SSH key line) is not an age recipient."""

    def edit(d: dict[str, Any]) -> None:
        term(d, "recipientKeys")["value"] = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"]

    with pytest.raises(ContractError, match="does not match") as caught:
        load_contract(edited(tmp_path, edit))
    assert caught.value.problems[0].path == "customProperties[7].value[0]"


# --- well-formed contracts in shapes the loader did not expect (found by the fuzz test) -------


def _basis(d: dict[str, Any]) -> dict[str, Any]:
    return term(d, "legalBasis")["value"]  # type: ignore[no-any-return]


def _field(d: dict[str, Any], i: int) -> dict[str, Any]:
    return d["schema"][0]["properties"][i]  # type: ignore[no-any-return]


ODD_SHAPES: dict[str, tuple[Edit, str, str]] = {
    "article 9 as a list of numbers": (
        lambda d: _basis(d).update(ukGdprArticle9=[7]),
        "customProperties[3].value.ukGdprArticle9",
        "is not",
    ),
    "article 9 as a mapping": (
        lambda d: _basis(d).update(ukGdprArticle9={"value": "9(2)(g)"}),
        "customProperties[3].value.ukGdprArticle9",
        "is not",
    ),
    "statutes as a number": (
        lambda d: _basis(d).update(statutes=7),
        "customProperties[3].value.statutes",
        "is not of type 'array'",
    ),
    "host key as a number": (
        lambda d: d["servers"][0]["customProperties"][0].update(value=[7]),
        "servers[0].customProperties[0].value[0]",
        "must be an SSH public key line",
    ),
    "host key as a mapping": (
        lambda d: d["servers"][0]["customProperties"][0].update(value=[{"x": 1}]),
        "servers[0].customProperties[0].value[0]",
        "must be an SSH public key line",
    ),
    "host keys as one string": (
        lambda d: d["servers"][0]["customProperties"][0].update(
            value="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICPziuGclVMHb3eVKIUNmDNnSYz8HiZa9/v240qZm72I"
        ),
        "servers[0].customProperties[0].value",
        "must be a list of SSH public key lines",
    ),
    "host key list in a list": (
        lambda d: d["servers"][0]["customProperties"][0].update(value=[["ssh-ed25519", "AAAA"]]),
        "servers[0].customProperties[0].value[0]",
        "must be an SSH public key line",
    ),
    "valid values as a number": (
        lambda d: _field(d, 3)["quality"][0]["arguments"].update(validValues=7),
        "schema[0].properties[3].quality[0].arguments.validValues",
        "must be a list of values",
    ),
    "valid values as null": (
        lambda d: _field(d, 3)["quality"][0]["arguments"].update(validValues=None),
        "schema[0].properties[3].quality[0].arguments.validValues",
        "must be a list of values",
    ),
    "row count bound infinite": (
        lambda d: d["schema"][0]["quality"][0].update(mustBeBetween=[1, float("inf")]),
        "schema[0].quality[0].mustBeBetween",
        "whole number",
    ),
    "pattern not a regex": (
        lambda d: _field(d, 5)["logicalTypeOptions"].update(pattern="([0-9]"),
        "schema[0].properties[5].logicalTypeOptions.pattern",
        "not a valid regular expression",
    ),
    # A term's schema pattern ends in `$`, which Python's re let match before a line break.
    "secret name with a final line break": (
        lambda d: d["customProperties"][8].update(value="early-help-sftp\n"),
        "customProperties[8].value",
        "does not match",
    ),
    # Valid for Python's re, but the rules run in RE2, which would fail every row on it.
    "pattern with a lookahead": (
        lambda d: _field(d, 5)["logicalTypeOptions"].update(pattern="^(?=1)[0-9]{6}$"),
        "schema[0].properties[5].logicalTypeOptions.pattern",
        "RE2 has no lookaround or backreferences",
    ),
    "pattern with a backreference": (
        lambda d: _field(d, 5)["logicalTypeOptions"].update(pattern=r"^([0-9])\1$"),
        "schema[0].properties[5].logicalTypeOptions.pattern",
        "not a valid regular expression in RE2 syntax",
    ),
}


ODD_SHAPES["no schema"] = (
    lambda d: d.pop("schema"),
    "schema",
    "exactly one schema object",
)
ODD_SHAPES["empty schema"] = (
    lambda d: d.update(schema=[]),
    "schema",
    "exactly one schema object",
)


@pytest.mark.parametrize("case", sorted(ODD_SHAPES))
def test_an_odd_shape_is_a_clear_problem_in_lint_run_render_and_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Each shape once crashed lint, run, render or register with a traceback."""
    edit, where, fragment = ODD_SHAPES[case]
    folder = tmp_path / "contracts"
    folder.mkdir()
    path = edited(folder, edit)
    code, out, err = lint(path, capsys)
    assert_refused(code, out, err, path, where, fragment)
    code = cli.main(["contract", "render", str(path), "--out", str(tmp_path / "pages")])
    out, err = capsys.readouterr()
    assert_refused(code, out, err, path, where, fragment)
    code = cli.main(["contract", "register", str(folder), "--out", str(tmp_path / "register")])
    out, err = capsys.readouterr()
    assert code == cli.OK and "1 invalid" in out, err


def test_a_refused_pattern_is_said_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """RE2 reports a pattern it cannot parse only through lint's problem line, never its own
    log on stderr; a pattern in RE2's own syntax (a Unicode class) is accepted."""
    bad = edited(tmp_path, lambda d: _field(d, 5)["logicalTypeOptions"].update(pattern="(?=1)"))
    capfd.readouterr()
    assert cli.main(["contract", "lint", str(bad)]) == cli.BAD_INPUT
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if "RE2" in line or "re2" in line] == [
        line for line in err.splitlines() if line.startswith(f"{bad}: ")
    ], err
    good = edited(
        tmp_path,
        lambda d: _field(d, 5)["logicalTypeOptions"].update(pattern=r"^\p{N}{6}$"),
        "ok.yaml",
    )
    assert cli.main(["contract", "lint", str(good)]) == cli.OK, capfd.readouterr()


def test_run_refuses_an_odd_shape_with_a_clear_error(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`exchange run` of a contract whose Article 9 condition is a list: refused, audited."""
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    edit, where, fragment = ODD_SHAPES["article 9 as a list of numbers"]
    write_contract(workspace.contract, RECIPIENT, edit)
    capsys.readouterr()
    code = cli.main(["run", str(workspace.contract), "--source", str(workspace.source(50))])
    out, err = capsys.readouterr()
    assert_refused(code, out, err, workspace.contract, where, fragment)
    assert re.search(r"^exchange: contract invalid: \d+ problem\(s\)$", err, re.MULTILINE)


def test_run_refuses_an_unsafe_id_and_writes_nothing(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `../` id cannot place a staged drop outside the gateway's home."""
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)

    def edit(d: dict[str, Any]) -> None:
        d["id"] = "../../../escaped"

    write_contract(workspace.contract, RECIPIENT, edit)
    before = {p for p in workspace.root.rglob("*")}
    capsys.readouterr()
    code = cli.main(["run", str(workspace.contract), "--source", str(workspace.source(50))])
    out, err = capsys.readouterr()
    assert_refused(code, out, err, workspace.contract, "id", "lower-case letters")
    after = {p for p in workspace.root.parent.rglob("*escaped*")}
    assert after == set()
    new = {p for p in workspace.root.rglob("*")} - before
    assert not [p for p in new if "staging" in p.parts], new


def test_the_sample_is_still_read_exactly(tmp_path: Path) -> None:
    """The strict loader reads the sample as the plain safe loader does."""
    assert yaml.safe_load(TEXT)["id"] == load_contract(SAMPLE).id
