"""Tests for comparing two versions of a contract (exchange.contract.diff)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml
from conftest import SAMPLE, write_contract

from exchange.contract import load_contract, read_document
from exchange.contract.diff import (
    KINDS,
    Change,
    classify,
    diff_documents,
    read_revision,
)
from exchange.errors import ContractError

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
OTHER_RECIPIENT = str(pyrage.x25519.Identity.generate().to_public())

Edit = Callable[[dict[str, Any]], None]


def term(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The top-level customProperties item named `name`."""
    return next(p for p in document["customProperties"] if p["property"] == name)


def field(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema property (outgoing field) named `name`."""
    return next(p for p in document["schema"][0]["properties"] if p["name"] == name)


def field_term(document: dict[str, Any], name: str, prop: str) -> dict[str, Any]:
    """The customProperties item `prop` of the field `name`."""
    return next(p for p in field(document, name)["customProperties"] if p["property"] == prop)


def retention(document: dict[str, Any]) -> dict[str, Any]:
    """The retention slaProperty."""
    return next(p for p in document["slaProperties"] if p["property"] == "retention")


def compare(tmp_path: Path, new: Edit | None = None, old: Edit | None = None) -> list[Change]:
    """Diff two edited copies of the sample; both must load, as real agreements do."""
    old_path = write_contract(tmp_path / "old.yaml", RECIPIENT, old)
    new_path = write_contract(tmp_path / "new.yaml", RECIPIENT, new)
    load_contract(old_path)
    load_contract(new_path)
    changes = diff_documents(read_document(old_path), read_document(new_path))
    for change in changes:
        assert change.kind in KINDS
        assert "\n" not in change.summary
    return changes


def kinds(changes: list[Change]) -> set[str]:
    return {c.kind for c in changes}


def only(changes: list[Change], kind: str) -> Change:
    """The single change of `kind`."""
    found = [c for c in changes if c.kind == kind]
    assert len(found) == 1, changes
    return found[0]


# --- nothing changed ---------------------------------------------------------------------------


def test_same_contract_is_identical(tmp_path: Path) -> None:
    """A contract compared with itself has no changes."""
    changes = compare(tmp_path)
    assert changes == []
    assert classify(changes) == "identical"
    assert classify(changes) == "identical"


def test_reformatted_yaml_is_identical(tmp_path: Path) -> None:
    """Comments, key order, quoting, flow style and JSON spelling are not changes."""
    document = read_document(SAMPLE)
    sorted_yaml = tmp_path / "sorted.yaml"
    sorted_yaml.write_text(yaml.safe_dump(document, sort_keys=True, default_flow_style=True))
    as_json = tmp_path / "contract.json"
    as_json.write_text(json.dumps(document, indent=1))
    for path in (sorted_yaml, as_json):
        assert diff_documents(read_document(SAMPLE), read_document(path)) == []


def test_reordered_fields_terms_and_lists_are_identical(tmp_path: Path) -> None:
    """Fields, terms, field terms, SLAs, purposes, statutes and tags may be reordered freely."""

    def reorder(d: dict[str, Any]) -> None:
        d["customProperties"].reverse()
        d["slaProperties"].reverse()
        d["tags"].reverse()
        d["schema"][0]["properties"].reverse()
        for prop in d["schema"][0]["properties"]:
            prop["customProperties"].reverse()
        term(d, "purposes")["value"].reverse()
        term(d, "legalBasis")["value"]["statutes"].reverse()

    changes = compare(tmp_path, reorder)
    assert changes == []
    assert classify(changes) == "identical"


# --- editorial changes -------------------------------------------------------------------------


def test_wording_only_is_editorial(tmp_path: Path) -> None:
    """Descriptions, names, tags, contacts and the version string are editorial."""

    def reword(d: dict[str, Any]) -> None:
        d["version"] = "1.0.1"
        d["name"] = "School attendance and exclusions shared with Early Help"
        d["description"]["purpose"] += " Reviewed with the Early Help service in 2026."
        d["description"]["usage"] = "Matched nightly against open Early Help cases."
        d["tags"].append("attendance")
        d["team"]["members"][1]["name"] = "Information Governance Team"
        d["roles"][0]["firstLevelApprovers"] = "Head of Early Help"
        d["servers"][0]["description"] = "Early Help's inbox"
        retention(d)["description"] = "Kept two years from receipt, then deleted."
        field(d, "gender")["description"] = "Gender as recorded by the school."
        field(d, "school_urn")["businessName"] = "School unique reference number"
        field(d, "gender")["quality"][0]["description"] = "Only F, M or X."
        term(d, "recipient")["value"]["contact"] = "early.help.ig@anyshire.example"
        term(d, "rightsRequestsContact")["value"] = "rights@anyshire.example"

    changes = compare(tmp_path, reword)
    assert kinds(changes) == {"version-changed", "wording", "contacts-changed"}
    assert not any(c.reapproval for c in changes)
    assert classify(changes) == "editorial"
    purpose = next(c for c in changes if c.path == "description.purpose")
    assert "welfare. Reviewed with the Early Help" in purpose.summary


def to_year(d: dict[str, Any]) -> None:
    """Send birth_month as the year only (with the type and options that requires)."""
    birth = field(d, "birth_month")
    field_term(d, "birth_month", "transformOptions")["value"] = {"to": "year"}
    birth["logicalType"] = "integer"
    del birth["logicalTypeOptions"]


def strengthen_ethnicity(d: dict[str, Any]) -> None:
    field_term(d, "ethnicity", "transform")["value"] = "pseudonymise"


def remove_free_school_meals(d: dict[str, Any]) -> None:
    d["schema"][0]["properties"] = [
        p for p in d["schema"][0]["properties"] if p["name"] != "free_school_meals"
    ]


def shorter_retention(d: dict[str, Any]) -> None:
    retention(d).update(value=12, unit="months")


def drop_purpose(d: dict[str, Any]) -> None:
    term(d, "purposes")["value"].remove("childrens-services")


def tighten_quality(d: dict[str, Any]) -> None:
    field(d, "gender")["quality"][0]["arguments"]["validValues"] = ["F", "M"]
    d["schema"][0]["quality"][0]["mustBeBetween"] = [100, 1000000]
    field(d, "ethnicity")["required"] = True
    field(d, "exclusions")["logicalTypeOptions"]["maximum"] = 100


def earlier_review(d: dict[str, Any]) -> None:
    term(d, "reviewDate")["value"] = "2027-03-31"


def retire(d: dict[str, Any]) -> None:
    d["status"] = "retired"


def raise_gender(d: dict[str, Any]) -> None:
    field(d, "gender")["classification"] = "restricted"


def overridden(d: dict[str, Any]) -> None:
    statutes = term(d, "legalBasis")["value"]["statutes"]
    statutes.append({"act": "Children Act 1989", "section": "s.47"})
    term(d, "objections")["value"].update(
        legalBasisOverrides=True,
        overrideJustification="A child's safety outweighs a family's objection here.",
    )


def honour_objections(d: dict[str, Any]) -> None:
    overridden(d)
    term(d, "objections")["value"]["legalBasisOverrides"] = False
    del term(d, "objections")["value"]["overrideJustification"]


def archive(d: dict[str, Any]) -> None:
    term(d, "retentionAction")["value"] = "archive"


EDITORIAL: list[tuple[str, Edit | None, Edit, str]] = [
    ("ethnicity keep -> pseudonymise", None, strengthen_ethnicity, "transform-strengthened"),
    ("year-month -> year", None, to_year, "transform-strengthened"),
    ("field removed", None, remove_free_school_meals, "field-removed"),
    ("retention 2 y -> 12 months", None, shorter_retention, "retention-shorter"),
    ("purpose removed", None, drop_purpose, "purpose-removed"),
    ("quality tightened", None, tighten_quality, "quality-tightened"),
    ("review date earlier", None, earlier_review, "review-date-changed"),
    ("status active -> retired", None, retire, "status-changed"),
    ("classification raised", None, raise_gender, "classification-raised"),
    ("objection override off", overridden, honour_objections, "objection-rule-changed"),
    ("archive -> delete", archive, lambda d: None, "retention-action-changed"),
]


@pytest.mark.parametrize(
    ("old", "new", "kind"), [c[1:] for c in EDITORIAL], ids=[c[0] for c in EDITORIAL]
)
def test_less_sharing_is_editorial(tmp_path: Path, old: Edit | None, new: Edit, kind: str) -> None:
    """Changes that only reduce what is shared, or for how long, are editorial."""
    changes = compare(tmp_path, new, old)
    assert kind in kinds(changes)
    assert not any(c.reapproval for c in changes), changes
    assert classify(changes) == "editorial"


def test_stronger_transform_carries_its_type_and_options(tmp_path: Path) -> None:
    """The type and pattern a stronger transform requires are part of it, not a loosening."""
    changes = compare(tmp_path, to_year)
    assert kinds(changes) == {"transform-strengthened", "type-changed", "quality-loosened"}
    assert "follows the stronger transform" in only(changes, "quality-loosened").summary
    assert classify(changes) == "editorial"


def test_same_retention_in_other_units_is_restated(tmp_path: Path) -> None:
    """24 months and 730 days are two years; only the wording changed."""
    for value, unit in ((24, "months"), (730, "days")):
        changes = compare(tmp_path, lambda d, v=value, u=unit: retention(d).update(value=v, unit=u))
        assert kinds(changes) == {"restated"}
        assert classify(changes) == "editorial"


# --- changes that need re-approval -------------------------------------------------------------


def new_field(d: dict[str, Any]) -> None:
    d["schema"][0]["properties"].append(
        {
            "name": "home_postcode",
            "physicalName": "postcode",
            "logicalType": "string",
            "classification": "restricted",
            "customProperties": [{"property": "transform", "value": "keep"}],
        }
    )


def unpseudonymise(d: dict[str, Any]) -> None:
    field_term(d, "person_ref", "transform")["value"] = "keep"
    field(d, "person_ref")["customProperties"].append(
        {"property": "justification", "value": "Early Help must match its own case records."}
    )


def new_purpose(d: dict[str, Any]) -> None:
    term(d, "purposes")["value"].append("research")


def police_recipient(d: dict[str, Any]) -> None:
    term(d, "recipient")["value"].update(organisation="Anyshire Constabulary", department="CID")


def new_article6(d: dict[str, Any]) -> None:
    term(d, "legalBasis")["value"]["ukGdprArticle6"] = "6(1)(c)"


def new_statute(d: dict[str, Any]) -> None:
    term(d, "legalBasis")["value"]["statutes"].append(
        {"act": "Education Act 2002", "section": "s.175"}
    )


def longer_retention(d: dict[str, Any]) -> None:
    retention(d)["value"] = 3


def add_key(d: dict[str, Any]) -> None:
    term(d, "recipientKeys")["value"].append(OTHER_RECIPIENT)


def objection_column(d: dict[str, Any]) -> None:
    term(d, "objections")["value"]["column"] = "objection_flag"


def source_column(d: dict[str, Any]) -> None:
    field(d, "birth_month")["physicalName"] = "dob"


def lower_ethnicity(d: dict[str, Any]) -> None:
    field(d, "ethnicity")["classification"] = "internal"


def special_gender(d: dict[str, Any]) -> None:
    field(d, "gender")["classification"] = "special-category"


def move_subject_key(d: dict[str, Any]) -> None:
    field(d, "person_ref")["customProperties"].pop()  # subjectKey
    field(d, "postcode_district")["customProperties"].append(
        {"property": "subjectKey", "value": True}
    )


def new_location(d: dict[str, Any]) -> None:
    d["servers"][0]["location"] = "sftp://sftp.partner.example/inbox/attendance"


def parquet(d: dict[str, Any]) -> None:
    d["servers"][0]["format"] = "parquet"


def set_term(name: str, value: Any) -> Edit:
    def edit(d: dict[str, Any]) -> None:
        term(d, name)["value"] = value

    return edit


def loosen_values(d: dict[str, Any]) -> None:
    field(d, "gender")["quality"][0]["arguments"]["validValues"].append("U")


def drop_rule(d: dict[str, Any]) -> None:
    del field(d, "gender")["quality"]


def more_rows(d: dict[str, Any]) -> None:
    d["schema"][0]["quality"][0]["mustBeBetween"] = [1, 50000000]


def optional_urn(d: dict[str, Any]) -> None:
    field(d, "school_urn")["required"] = False
    del field(d, "school_urn")["logicalTypeOptions"]


def new_domain(d: dict[str, Any]) -> None:
    d["domain"] = "health"


REAPPROVAL: list[tuple[str, Edit | None, Edit, str]] = [
    ("new field", None, new_field, "field-added"),
    ("pseudonymise -> keep", None, unpseudonymise, "transform-weakened"),
    ("year -> year-month", to_year, lambda d: None, "transform-weakened"),
    ("new purpose", None, new_purpose, "purpose-added"),
    ("recipient changed", None, police_recipient, "recipient-changed"),
    ("Art 6 changed", None, new_article6, "legal-basis-changed"),
    ("statute added", None, new_statute, "legal-basis-changed"),
    ("retention 2 y -> 3 y", None, longer_retention, "retention-longer"),
    ("delete -> archive", None, archive, "retention-action-changed"),
    ("recipient key added", None, add_key, "recipient-key-added"),
    ("objection override on", None, overridden, "objection-rule-changed"),
    ("objection column", None, objection_column, "objection-rule-changed"),
    ("source column", None, source_column, "source-changed"),
    ("classification lowered", None, lower_ethnicity, "classification-lowered"),
    ("now special category", None, special_gender, "classification-raised"),
    (
        "now health data",
        None,
        lambda d: field(d, "gender").update(classification="health"),
        "classification-raised",
    ),
    ("subject key moved", None, move_subject_key, "subject-key-changed"),
    ("endpoint location", None, new_location, "endpoint-changed"),
    ("endpoint format", None, parquet, "endpoint-changed"),
    ("sftp connection", None, set_term("sftpConnection", "police-sftp"), "endpoint-changed"),
    (
        "pseudonymisation key",
        None,
        set_term("pseudonymisationKey", "shared-key"),
        "pseudonymisation-key-changed",
    ),
    ("schedule", None, set_term("schedule", "0 */4 * * *"), "schedule-changed"),
    ("review date later", None, set_term("reviewDate", "2030-09-30"), "review-date-changed"),
    ("status retired -> active", retire, lambda d: None, "status-changed"),
    ("DPIA reference", None, set_term("dpiaReference", "DPIA-EDU-2027-001"), "dpia-changed"),
    (
        "termination",
        None,
        set_term("termination", "Ends at 7 days' notice."),
        "termination-changed",
    ),
    ("valid values widened", None, loosen_values, "quality-loosened"),
    ("quality rule removed", None, drop_rule, "quality-loosened"),
    ("row count widened", None, more_rows, "quality-loosened"),
    ("required and pattern dropped", None, optional_urn, "quality-loosened"),
    ("unknown top-level key", None, new_domain, "unclassified"),
]


@pytest.mark.parametrize(
    ("old", "new", "kind"), [c[1:] for c in REAPPROVAL], ids=[c[0] for c in REAPPROVAL]
)
def test_wider_or_different_sharing_needs_reapproval(
    tmp_path: Path, old: Edit | None, new: Edit, kind: str
) -> None:
    """Every change that widens or alters the sharing needs the officer's approval again."""
    changes = compare(tmp_path, new, old)
    assert any(c.kind == kind and c.reapproval for c in changes), changes
    assert classify(changes) == "needs-re-approval"
    assert classify(changes) == "needs-re-approval"


def test_direct_identifier_marking_and_justification(tmp_path: Path) -> None:
    """Unmarking a direct identifier, or rewriting why one is sent in full, is re-approval."""

    def mark(d: dict[str, Any]) -> None:
        field(d, "school_urn")["customProperties"].append(
            {"property": "directIdentifier", "value": True}
        )
        field(d, "school_urn")["customProperties"].append(
            {"property": "justification", "value": "Early Help works school by school."}
        )

    def reword(d: dict[str, Any]) -> None:
        mark(d)
        field_term(d, "school_urn", "justification")["value"] = "Needed to contact the school."

    marked = compare(tmp_path, mark)
    assert kinds(marked) == {"direct-identifier-changed", "justification-changed"}
    assert only(marked, "direct-identifier-changed").reapproval is False
    unmarked = compare(tmp_path, None, mark)
    assert only(unmarked, "direct-identifier-changed").reapproval is True
    reworded = compare(tmp_path, reword, mark)
    assert only(reworded, "justification-changed").reapproval is True

    def justified_in_full(d: dict[str, Any]) -> None:
        field(d, "ethnicity")["customProperties"].append(
            {"property": "justification", "value": "Monitoring that support reaches everyone."}
        )

    assert kinds(compare(tmp_path, justified_in_full)) == {"justification-changed"}
    pseudonymised = compare(
        tmp_path,
        lambda d: field(d, "person_ref")["customProperties"].append(
            {"property": "justification", "value": "Needed to match Early Help's cases."}
        ),
    )
    assert kinds(pseudonymised) == {"wording"}


def test_new_host_key_needs_reapproval(tmp_path: Path) -> None:
    """A different pinned host key may be a different server: the officer confirms it."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    changes = compare(
        tmp_path, lambda d: d["servers"][0]["customProperties"][0]["value"].append(key)
    )
    change = only(changes, "endpoint-changed")
    assert change.reapproval
    assert change.path == "servers[early-help-inbox].customProperties.hostKeys"
    assert "host key added" in change.summary


def test_weakened_transform_is_located_by_field_name(tmp_path: Path) -> None:
    """Paths name the field and the term, so the officer finds them whatever the order."""
    changes = compare(tmp_path, None, to_year)
    weakened = only(changes, "transform-weakened")
    assert weakened.path == (
        "schema[0].properties[birth_month].customProperties.transformOptions.to"
    )
    assert weakened.summary == (
        "birth_month: date of birth generalised to year -> generalised to year-month (weaker)"
    )
    unkept = only(compare(tmp_path, unpseudonymise), "transform-weakened")
    assert unkept.path == "schema[0].properties[person_ref].customProperties.transform"
    assert unkept.summary == "person_ref: person id pseudonymised -> kept in full (weaker)"


def test_removed_recipient_key_needs_reapproval_and_says_why(tmp_path: Path) -> None:
    """Dropping a key changes who can decrypt; the officer must confirm who holds the rest."""
    changes = compare(tmp_path, None, add_key)
    removed = only(changes, "recipient-key-removed")
    assert removed.reapproval
    assert "confirm why" in removed.summary


def test_mixed_changes_list_both_kinds(tmp_path: Path) -> None:
    """A reworded contract that also adds a field needs re-approval; both are reported."""

    def edit(d: dict[str, Any]) -> None:
        d["description"]["limitations"] = "Attendance is as recorded by schools."
        new_field(d)

    changes = compare(tmp_path, edit)
    assert kinds(changes) == {"wording", "field-added"}
    assert {c.kind: c.reapproval for c in changes} == {"wording": False, "field-added": True}
    assert classify(changes) == "needs-re-approval"


def test_change_kinds_are_a_closed_set() -> None:
    """A Change with a kind outside the documented set cannot be made."""
    with pytest.raises(ValueError, match="unknown change kind"):
        Change("version", "something-else", "x", False)


# --- reading revisions -------------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_read_revision_reads_a_file(tmp_path: Path) -> None:
    """A plain path is read as the contract file, relative to cwd when given."""
    path = write_contract(tmp_path / "contract.yaml", RECIPIENT)
    assert read_revision(str(path)) == (str(path), read_document(path))
    assert read_revision("contract.yaml", cwd=tmp_path) == ("contract.yaml", read_document(path))


def test_read_revision_reads_an_earlier_git_revision(tmp_path: Path) -> None:
    """`REV:path` is the contract as committed at REV."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    contract = write_contract(repo / "contract.yaml", RECIPIENT)
    git(repo, "add", "contract.yaml")
    git(repo, "commit", "-q", "-m", "agreed")
    write_contract(contract, RECIPIENT, new_purpose)
    git(repo, "commit", "-q", "-am", "research added")

    label, before = read_revision("HEAD~1:contract.yaml", cwd=repo)
    assert label == "HEAD~1:contract.yaml"
    assert before == read_document(SAMPLE)
    _, after = read_revision("HEAD:contract.yaml", cwd=repo)
    changes = diff_documents(before, after)
    assert kinds(changes) == {"purpose-added"}
    assert only(changes, "purpose-added").path == "customProperties.purposes[research]"


def test_read_revision_reports_what_it_cannot_read(tmp_path: Path) -> None:
    """Unknown revisions, paths not in the revision, missing files and bad YAML are errors."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write_contract(repo / "contract.yaml", RECIPIENT)
    (repo / "broken.yaml").write_text("id: [unclosed\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "agreed")
    for spec in ("no-such-rev:contract.yaml", "HEAD:missing.yaml", "-p:contract.yaml"):
        with pytest.raises(ContractError) as caught:
            read_revision(spec, cwd=repo)
        (problem,) = caught.value.problems
        assert problem.file == spec
    with pytest.raises(ContractError, match="cannot read file"):
        read_revision("absent.yaml", cwd=repo)
    with pytest.raises(ContractError, match="not valid YAML"):
        read_revision("HEAD:broken.yaml", cwd=repo)


def objections_with(**changes: Any) -> Edit:
    def edit(d: dict[str, Any]) -> None:
        term(d, "objections")["value"].update(changes)

    return edit


@pytest.mark.parametrize(
    ("old", "new", "reapproval"),
    [
        ({"objectedValues": ["Y"]}, {"objectedValues": ["Y", "1"]}, False),  # more honoured
        ({"objectedValues": ["Y", "1"]}, {"objectedValues": ["Y"]}, True),
        ({"emptyMeans": "not-objected"}, {"emptyMeans": "objected"}, False),
        ({"emptyMeans": "objected"}, {"emptyMeans": "not-objected"}, True),
    ],
)
def test_objection_flag_changes_are_judged_by_which_way_they_go(
    tmp_path: Path, old: dict[str, Any], new: dict[str, Any], reapproval: bool
) -> None:
    def flags(extra: dict[str, Any]) -> Edit:
        return objections_with(**{"objectedValues": ["Y"], **extra})

    changes = compare(tmp_path, flags(new), flags(old))
    change = only(changes, "objection-rule-changed")
    assert change.reapproval is reapproval
    assert "unclassified" not in kinds(changes)
