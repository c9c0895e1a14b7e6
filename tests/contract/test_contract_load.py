"""Unit tests for loading and checking data contracts (exchange.contract)."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, SAMPLE, write_contract

from exchange.contract import canonical_sha256, check_document, load_contract, read_document
from exchange.errors import ContractError, Problem

EXCHANGE = REPO / ".venv" / "bin" / "exchange"
RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
# Passes the terms schema's pattern (bech32 characters) but fails the checksum.
BAD_RECIPIENT = "age1" + "q" * 58

Edit = Callable[[dict[str, Any]], None]


def term(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The top-level customProperties item named `name`."""
    return next(p for p in document["customProperties"] if p["property"] == name)


def field_terms(document: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The customProperties list of schema[0].properties[index]."""
    return document["schema"][0]["properties"][index]["customProperties"]


def problems_of(path: Path) -> tuple[Problem, ...]:
    """Load `path`, expecting a ContractError, and return its problems."""
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    return caught.value.problems


def edited(tmp_path: Path, edit: Edit, name: str = "edited.yaml") -> Path:
    """The sample contract, edited, written to a new file."""
    return write_contract(tmp_path / name, RECIPIENT, edit)


# --- the sample ---------------------------------------------------------------------------


def test_sample_loads_with_its_fields_in_order() -> None:
    """The shipped sample is valid and its fields are read in contract order."""
    contract = load_contract(SAMPLE)
    assert contract.id == "school-attendance-to-early-help"
    assert contract.version == "1.0.0"
    assert contract.status == "active"
    assert contract.field_names == (
        "person_ref",
        "birth_month",
        "postcode_district",
        "gender",
        "ethnicity",
        "school_urn",
        "attendance_rate",
        "exclusions",
        "free_school_meals",
    )
    transforms = {f.name: f.transform for f in contract.fields}
    assert transforms["person_ref"] == "pseudonymise"
    assert transforms["birth_month"] == "generalise-date"
    assert transforms["postcode_district"] == "postcode-district"
    assert transforms["gender"] == "keep"
    birth = contract.fields[1]
    assert birth.source == "date_of_birth"
    assert dict(birth.transform_options) == {"to": "year-month"}
    assert birth.path == "schema[0].properties[1]"
    assert contract.source_name == "attendance_export"
    assert contract.dataset == "pupil_attendance"


def test_sample_source_columns_subject_key_and_endpoint() -> None:
    """Source columns are the fields' physical names plus the objection column, once each."""
    contract = load_contract(SAMPLE)
    assert contract.source_columns == (
        "person_id",
        "date_of_birth",
        "postcode",
        "gender",
        "ethnicity",
        "school_urn",
        "attendance_rate",
        "exclusions",
        "free_school_meals",
        "objection",
    )
    key = contract.subject_key
    assert (key.name, key.source, key.required, key.unique) == (
        "person_ref",
        "person_id",
        True,
        True,
    )
    endpoint = contract.endpoint
    assert endpoint.server == "early-help-inbox"
    assert endpoint.host == "sftp.earlyhelp.anyshire.example"
    assert endpoint.folder == "inbox/attendance"
    assert endpoint.format == "csv"
    assert endpoint.connection == "early-help-sftp"


def test_sample_sharing_terms() -> None:
    """The sharing terms become typed values."""
    contract = load_contract(SAMPLE)
    assert contract.purposes == ("safeguarding", "childrens-services", "supporting-people-in-need")
    assert contract.objections.column == "objection"
    assert contract.objections.overridden is False
    assert contract.recipient_keys == (RECIPIENT,)
    assert contract.pseudonymisation_key == "early-help-pseudonym-key"
    assert contract.schedule == "0 2 * * *"
    assert contract.review_date.isoformat() == "2028-09-30"
    assert contract.retention == "2 y"
    assert contract.dpia_reference == "DPIA-EDU-2026-014"
    assert [str(s) for s in contract.legal_basis.statutes] == [
        "Children Act 2004 s.10",
        "Children Act 2004 s.11",
    ]
    assert contract.sha256 == canonical_sha256(read_document(SAMPLE))


# --- problems, each located -----------------------------------------------------------------


def test_odcs_schema_violation_is_located_and_names_the_file(tmp_path: Path) -> None:
    """A logicalType the ODCS schema does not know is reported at its exact path."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"][8]["logicalType"] = "bool"

    path = edited(tmp_path, edit, "bool-type.yaml")
    problems = problems_of(path)
    located = [p for p in problems if p.path == "schema[0].properties[8].logicalType"]
    assert len(located) == 1
    assert "'bool'" in located[0].message
    assert all(p.file == str(path) for p in problems)
    assert str(located[0]).startswith(f"{path}: schema[0].properties[8].logicalType: ")


def test_unknown_purpose_code_is_located(tmp_path: Path) -> None:
    """An unknown purpose is reported at its index inside the purposes value."""

    def edit(d: dict[str, Any]) -> None:
        term(d, "purposes")["value"].append("marketing")

    problems = problems_of(edited(tmp_path, edit))
    assert [(p.path, "'marketing'" in p.message) for p in problems] == [
        ("customProperties[2].value[3]", True)
    ]


def test_missing_required_sharing_term(tmp_path: Path) -> None:
    """Leaving out a required term (the DPIA reference) is reported by name."""

    def edit(d: dict[str, Any]) -> None:
        d["customProperties"] = [
            p for p in d["customProperties"] if p["property"] != "dpiaReference"
        ]

    problems = problems_of(edited(tmp_path, edit))
    assert len(problems) == 1
    assert problems[0].path == "customProperties"
    assert "dpiaReference" in problems[0].message


def test_every_problem_in_one_file_is_reported(tmp_path: Path) -> None:
    """Several independent mistakes come back together, not one at a time."""

    def edit(d: dict[str, Any]) -> None:
        term(d, "purposes")["value"] = ["safeguarding", "marketing"]
        term(d, "schedule")["value"] = "61 2 * * *"
        term(d, "recipientKeys")["value"] = [BAD_RECIPIENT]
        d["customProperties"] = [
            p for p in d["customProperties"] if p["property"] != "dpiaReference"
        ]
        field_terms(d, 0).pop()  # person_ref is no longer the subject key

    path = edited(tmp_path, edit)
    problems = problems_of(path)
    assert sorted(p.path for p in problems) == [
        "customProperties",  # dpiaReference is missing
        "customProperties[2].value[1]",  # the unknown purpose
        "customProperties[5].value",  # the cron
        "customProperties[7].value[0]",  # the recipient key
        "schema[0].properties",  # no subject key
    ]
    messages = " | ".join(p.message for p in problems)
    for fragment in (
        "dpiaReference",
        "marketing",
        "not a valid cron",
        "age recipient",
        "subjectKey",
    ):
        assert fragment in messages
    with pytest.raises(ContractError, match=r"\(and 4 more\)"):
        load_contract(path)


def test_several_odcs_problems_are_all_reported(tmp_path: Path) -> None:
    """Schema-level mistakes in different places are each listed."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"][8]["logicalType"] = "bool"
        d["schema"][0]["properties"][7]["logicalType"] = "int"

    paths = {p.path for p in problems_of(edited(tmp_path, edit))}
    assert {
        "schema[0].properties[7].logicalType",
        "schema[0].properties[8].logicalType",
    } <= paths


def test_invalid_cron(tmp_path: Path) -> None:
    """A schedule that is not a cron expression is refused at its value."""

    def edit(d: dict[str, Any]) -> None:
        term(d, "schedule")["value"] = "every night at 2"

    problems = problems_of(edited(tmp_path, edit))
    assert [p.path for p in problems] == ["customProperties[5].value"]
    assert "not a valid cron" in problems[0].message


@pytest.mark.parametrize(("value", "unit", "refused"), [(100, "y", False), (101, "y", True)])
def test_retention_is_at_most_what_a_manifest_states(
    tmp_path: Path, value: int, unit: str, refused: bool
) -> None:
    """A partner must be able to compute the end date: 100 years at most, as manifests cap it."""

    def edit(d: dict[str, Any]) -> None:
        period = next(s for s in d["slaProperties"] if s["property"] == "retention")
        period["value"], period["unit"] = value, unit

    path = edited(tmp_path, edit)
    if not refused:
        assert load_contract(path).retention_days == 36500
        return
    problems = problems_of(path)
    assert [p.path for p in problems if "retention" in p.message] == [
        next(p.path for p in problems if p.path.startswith("slaProperties["))
    ]
    assert any("longer than 36500 days" in p.message for p in problems)


def test_invalid_age_recipient(tmp_path: Path) -> None:
    """A recipient key with a bad checksum is refused at its index."""
    path = write_contract(tmp_path / "bad-key.yaml", BAD_RECIPIENT)
    problems = problems_of(path)
    assert [(p.path, p.message) for p in problems] == [
        ("customProperties[7].value[0]", "not a valid age recipient")
    ]


def test_transform_output_must_match_logical_type(tmp_path: Path) -> None:
    """Generalising a date to its year gives an integer, so logicalType string is wrong."""

    def edit(d: dict[str, Any]) -> None:
        field_terms(d, 1)[1]["value"] = {"to": "year"}

    problems = problems_of(edited(tmp_path, edit))
    assert [p.path for p in problems] == ["schema[0].properties[1].logicalType"]
    assert "'integer'" in problems[0].message and "'string'" in problems[0].message


@pytest.mark.parametrize("count", [0, 2])
def test_exactly_one_subject_key(tmp_path: Path, count: int) -> None:
    """Zero or two subjectKey fields are refused, naming how many were found."""

    def edit(d: dict[str, Any]) -> None:
        if count == 0:
            field_terms(d, 0).pop()
        else:
            field_terms(d, 5).append({"property": "subjectKey", "value": True})

    problems = problems_of(edited(tmp_path, edit))
    counted = [p for p in problems if p.path == "schema[0].properties"]
    assert len(counted) == 1 and f"(found {count})" in counted[0].message
    if count == 2:  # a subject key kept in clear is also a direct identifier sent in clear
        assert [p.path for p in problems if p not in counted] == [
            "schema[0].properties[5].customProperties"
        ]


def test_pseudonymise_needs_a_key_name(tmp_path: Path) -> None:
    """A pseudonymised field without pseudonymisationKey is refused."""

    def edit(d: dict[str, Any]) -> None:
        d["customProperties"] = [
            p for p in d["customProperties"] if p["property"] != "pseudonymisationKey"
        ]

    problems = problems_of(edited(tmp_path, edit))
    assert [p.path for p in problems] == ["customProperties"]
    assert "pseudonymisationKey" in problems[0].message


def test_duplicate_field_name(tmp_path: Path) -> None:
    """Two fields with one name are refused at the second."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"][4]["name"] = "gender"

    problems = problems_of(edited(tmp_path, edit))
    assert [p.path for p in problems] == ["schema[0].properties[4].name"]


def test_transform_options_of_wrong_type_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """transformOptions given as a list is reported, not an AttributeError."""

    def edit(d: dict[str, Any]) -> None:
        field_terms(d, 1)[1]["value"] = ["year"]

    problems = problems_of(edited(tmp_path, edit))
    assert "schema[0].properties[1].customProperties[1].value" in {p.path for p in problems}


def test_transform_of_wrong_type_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A transform given as a list is reported, not a TypeError."""

    def edit(d: dict[str, Any]) -> None:
        field_terms(d, 3)[0]["value"] = ["keep"]

    problems = problems_of(edited(tmp_path, edit))
    assert "schema[0].properties[3].customProperties[0].value" in {p.path for p in problems}


def test_purposes_as_a_string_is_one_problem(tmp_path: Path) -> None:
    """A scalar where a list is needed gives a single type problem."""

    def edit(d: dict[str, Any]) -> None:
        term(d, "purposes")["value"] = "safeguarding"

    problems = problems_of(edited(tmp_path, edit))
    assert [p.path for p in problems] == ["customProperties[2].value"]


# --- reading the file -----------------------------------------------------------------------


def test_bad_yaml_gives_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error is located by line and column."""
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v3.1.0\nid: x\n  kind: DataContract\n")
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].path == "line 3, column 7"
    assert problems[0].message.startswith("not valid YAML")
    assert problems[0].file == str(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    """A list, a scalar or an empty file is not a contract."""
    path = tmp_path / "not-mapping.yaml"
    path.write_text(text)
    problems = problems_of(path)
    assert [p.message for p in problems] == ["a contract must be a YAML mapping"]


def test_python_object_tag_is_refused_not_executed(tmp_path: Path) -> None:
    """The safe loader refuses object-constructing tags; the command is never run."""
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "evil.yaml"
    path.write_text(f"apiVersion: !!python/object/apply:os.system ['touch {marker}']\n")
    problems = problems_of(path)
    assert len(problems) == 1
    assert "python/object/apply" in problems[0].message
    assert problems[0].path.startswith("line 1, column ")
    assert not marker.exists()


def test_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is a ContractError, not an OSError."""
    problems = problems_of(tmp_path / "absent.yaml")
    assert problems[0].message.startswith("cannot read file")


# --- the canonical hash ---------------------------------------------------------------------


def _reversed_keys(value: Any) -> Any:
    """The same document with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


def _commented(text: str) -> str:
    """The sample's text with extra comments and blank lines before each top-level key."""
    lines = []
    for line in text.splitlines():
        if line[:1].isalpha():
            lines += ["", f"# reviewer's note before {line.split(':')[0]}", ""]
        lines.append(line)
    return "\n".join(lines) + "\n# the end\n"


def _variants(document: dict[str, Any]) -> dict[str, str]:
    """The sample rewritten in several layouts that carry the same data."""
    return {
        "sorted-keys": yaml.safe_dump(document, sort_keys=True),
        "reversed-keys": yaml.safe_dump(_reversed_keys(document), sort_keys=False),
        "flow-style": yaml.safe_dump(document, default_flow_style=True, width=10_000),
        "double-quoted": yaml.safe_dump(document, default_style='"', sort_keys=False),
        "json": json.dumps(document, indent=3),
        "commented": _commented(SAMPLE.read_text()),
    }


def test_canonical_hash_ignores_layout(tmp_path: Path) -> None:
    """Key order, flow style, quoting, comments and JSON syntax do not change the hash."""
    original = load_contract(SAMPLE)
    document = read_document(SAMPLE)
    for name, text in _variants(document).items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        assert path.read_text() != SAMPLE.read_text()
        assert load_contract(path).sha256 == original.sha256, name


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every scalar in a document, with the keys and indices that reach it."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _changed(value: Any) -> Any:
    """A different scalar of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return f"{value}x"


def test_canonical_hash_changes_when_any_value_changes() -> None:
    """Changing any single scalar anywhere in the contract changes its hash."""
    document = read_document(SAMPLE)
    original = canonical_sha256(document)
    seen = {original}
    leaves = list(_leaves(document))
    assert len(leaves) > 100
    for path, value in leaves:
        copy_ = copy.deepcopy(document)
        target = copy_
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = _changed(value)
        digest = canonical_sha256(copy_)
        assert digest not in seen, path
        seen.add(digest)


def test_canonical_hash_of_a_date_equals_its_quoted_text() -> None:
    """An unquoted YAML date and the same date quoted hash alike (both become ISO text)."""
    quoted = yaml.safe_load('reviewDate: "2028-09-30"\n')
    unquoted = yaml.safe_load("reviewDate: 2028-09-30\n")
    assert quoted != unquoted  # YAML really did read them differently
    assert canonical_sha256(quoted) == canonical_sha256(unquoted)


def test_check_document_accepts_the_sample_as_parsed() -> None:
    """check_document finds nothing wrong with the sample."""
    assert list(check_document(read_document(SAMPLE), str(SAMPLE))) == []


# --- the lint command -----------------------------------------------------------------------


def _lint(*files: Path) -> subprocess.CompletedProcess[str]:
    """Run `exchange contract lint FILES` as a real process."""
    return subprocess.run(
        [str(EXCHANGE), "contract", "lint", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lint_cli_sample_is_ok() -> None:
    """The sample lints clean: exit 0 and an OK line."""
    result = _lint(SAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{SAMPLE}: OK"


def test_lint_cli_bad_file_lists_every_problem(tmp_path: Path) -> None:
    """A bad contract exits 2 and prints one `FILE: PATH: message` line per problem."""

    def edit(d: dict[str, Any]) -> None:
        term(d, "purposes")["value"].append("marketing")
        term(d, "schedule")["value"] = "61 2 * * *"

    path = edited(tmp_path, edit, "bad.yaml")
    result = _lint(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: customProperties[2].value[3]: unknown purpose code")
    assert lines[1].startswith(f"{path}: customProperties[5].value: not a valid cron")
    assert "OK" not in result.stdout
