"""Terms a real NHS agreement needs (issue 12): objection flags as the source writes them, a
conditional override, several legal conditions with the agreement's own wording, official
organisation codes, and the pseudonym scope."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
import yaml
from conftest import PSEUDONYM_KEY, REPO, write_contract

from exchange import manifest, transforms
from exchange.contract import Contract, load_contract
from exchange.contract.render import summary, to_html, to_markdown
from exchange.errors import ContractError
from exchange.minimise import Minimiser, read_types, source_types
from exchange.register import build_register

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
TODAY = dt.date(2025, 1, 1)
OVERRIDE = "Section 42 enquiries need the whole picture; the objection is recorded."


def term(d: dict[str, Any], name: str) -> dict[str, Any]:
    item = next((p for p in d["customProperties"] if p["property"] == name), None)
    if item is None:
        item = {"property": name, "value": None}
        d["customProperties"].append(item)
    return item  # type: ignore[no-any-return]


def contract(tmp_path: Path, *edits: Any, name: str = "c") -> Contract:
    def edit(d: dict[str, Any]) -> None:
        for e in edits:
            e(d)

    return load_contract(write_contract(tmp_path / f"{name}.yaml", RECIPIENT, edit))


def problems(tmp_path: Path, *edits: Any) -> list[str]:
    with pytest.raises(ContractError) as caught:
        contract(tmp_path, *edits, name="bad")
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def objections(**value: Any) -> Any:
    return lambda d: term(d, "objections").update(value={"column": "objection", **value})


def s42(d: dict[str, Any]) -> None:
    term(d, "legalBasis")["value"]["statutes"].append({"act": "Care Act 2014", "section": "s.42"})


def batch(c: Contract, objection: list[Any], **extra: list[Any]) -> pa.RecordBatch:
    n = len(objection)
    columns = {
        "person_id": [f"P{i:08d}" for i in range(n)],
        "date_of_birth": [dt.date(2012, 5, 17)] * n,
        "postcode": ["LS6 2AB"] * n,
        "gender": ["F"] * n,
        "ethnicity": ["WBRI"] * n,
        "school_urn": ["123456"] * n,
        "attendance_rate": [95.5] * n,
        "exclusions": [0] * n,
        "free_school_meals": [False] * n,
        "objection": objection,
        **extra,
    }
    return pa.RecordBatch.from_pydict(columns, schema=pa.schema(source_types(c)))


# --- 1. objection flags as the source writes them ----------------------------------------------


def test_text_flag_values_mean_objected_ignoring_case_and_space(tmp_path: Path) -> None:
    c = contract(tmp_path, objections(legalBasisOverrides=False, objectedValues=["Y", "Yes"]))
    assert read_types(c)["objection"] == "string"
    minimise = Minimiser(c, pseudonym_key=PSEUDONYM_KEY)
    out = minimise(batch(c, ["Y", "N", " y ", "yes", "No", "X", None, ""]))
    # Y, y, yes objected; empty and missing count as objected by default (safe); N, No, X not.
    assert out.num_rows == 3
    assert minimise.tally.excluded["objection"] == 5


def test_empty_means_not_objected_when_the_agreement_says_so(tmp_path: Path) -> None:
    edit = objections(legalBasisOverrides=False, objectedValues=["1"], emptyMeans="not-objected")
    c = contract(tmp_path, edit)
    minimise = Minimiser(c, pseudonym_key=PSEUDONYM_KEY)
    assert minimise(batch(c, ["1", "0", None, " "])).num_rows == 3


def test_boolean_flag_still_works_and_empty_can_mean_objected(tmp_path: Path) -> None:
    c = contract(tmp_path, objections(legalBasisOverrides=False))
    assert read_types(c)["objection"] == "boolean"
    assert Minimiser(c, pseudonym_key=PSEUDONYM_KEY)(batch(c, [True, False, None])).num_rows == 2
    strict = contract(tmp_path, objections(legalBasisOverrides=False, emptyMeans="objected"))
    assert (
        Minimiser(strict, pseudonym_key=PSEUDONYM_KEY)(batch(c, [True, False, None])).num_rows == 1
    )


def test_objected_values_must_be_a_list_of_text(tmp_path: Path) -> None:
    found = problems(tmp_path, objections(legalBasisOverrides=False, objectedValues="Y"))
    assert any("objectedValues" in p for p in found), found


def test_render_says_which_values_mean_objected(tmp_path: Path) -> None:
    c = contract(tmp_path, objections(legalBasisOverrides=False, objectedValues=["Y"]))
    words = summary(c, today=TODAY, governance=None)["objections"]["words"]
    assert "Y (in any case) means objected" in words
    assert "An empty flag counts as an objection." in words


# --- 2. a conditional override -----------------------------------------------------------------


def conditional(values: list[str]) -> Any:
    return objections(
        legalBasisOverrides=True,
        overrideJustification=OVERRIDE,
        objectedValues=["Y"],
        emptyMeans="not-objected",
        overrideCondition={"column": "enquiry_open", "values": values},
    )


def test_override_holds_only_where_the_condition_does(tmp_path: Path) -> None:
    c = contract(tmp_path, s42, conditional(["Y"]))
    assert read_types(c)["enquiry_open"] == "string"
    assert "enquiry_open" in c.source_columns
    minimise = Minimiser(c, pseudonym_key=PSEUDONYM_KEY)
    rows = batch(c, ["Y", "Y", "Y", "N", "N"], enquiry_open=["Y", "N", None, "N", "Y"])
    out = minimise(rows)
    # objecting: rows 0-2; sent only row 0 (enquiry open); rows 3-4 did not object.
    assert out.num_rows == 3
    assert minimise.tally.objections_overridden == 1
    assert minimise.tally.excluded["objection"] == 2
    words = summary(c, today=TODAY, governance=None)["objections"]["words"]
    assert "only for rows whose source column enquiry_open is Y" in words


def test_override_condition_matches_like_the_flag_trimmed_in_any_case(tmp_path: Path) -> None:
    c = contract(tmp_path, s42, conditional(["Y"]))
    minimise = Minimiser(c, pseudonym_key=PSEUDONYM_KEY)
    out = minimise(batch(c, ["Y", "Y", "Y"], enquiry_open=[" y", "Y ", "n"]))
    assert out.num_rows == 2 and minimise.tally.objections_overridden == 2


def test_override_condition_needs_an_override(tmp_path: Path) -> None:
    edit = objections(
        legalBasisOverrides=False, overrideCondition={"column": "enquiry_open", "values": ["Y"]}
    )
    assert any("overrideCondition" in p for p in problems(tmp_path, edit))


# --- 3. several legal conditions, paired, with the agreement's wording -------------------------


NHS_BASIS = {
    "statutes": [
        {
            "act": "Care Act 2014",
            "section": "s.42",
            "title": "Enquiry by local authority",
            "wording": "The council must make enquiries where an adult may be at risk of abuse.",
        },
        {"act": "Health and Social Care Act 2012", "section": "s.251B"},
    ],
    "ukGdprArticle6": "6(1)(e)",
    "ukGdprArticle9": [
        {"condition": "9(2)(h)", "wording": "Provision of health and social care."},
        "9(2)(g)",
    ],
    "dpa2018Schedule1": [
        "Part 1 para 2 (health or social care purposes)",
        {
            "condition": "Part 2 para 18",
            "wording": "Safeguarding of individuals at risk, verbatim.",
        },
    ],
}


def basis(value: dict[str, Any]) -> Any:
    return lambda d: term(d, "legalBasis").update(value=value)


def test_an_nhs_trust_to_adult_social_care_basis_lints(tmp_path: Path) -> None:
    c = contract(tmp_path, basis(NHS_BASIS))
    b = c.legal_basis
    assert [x.code for x in b.article9_conditions] == ["9(2)(h)", "9(2)(g)"]
    assert b.article9 == "9(2)(h)" and len(b.schedule1_conditions) == 2
    assert "UK GDPR Art 9(2)(g)" in b.summary() and "DPA 2018 Sch 1 Part 2 para 18" in b.summary()
    md = to_markdown(c, today=TODAY)
    page = to_html(c, today=TODAY)
    for own in (
        "The council must make enquiries where an adult may be at risk of abuse.",
        "Enquiry by local authority",
        "Provision of health and social care.",
        "Safeguarding of individuals at risk, verbatim.",
    ):
        assert own in md and own in page


@pytest.mark.parametrize(
    ("article9", "schedule1", "fragment"),
    [
        ("9(2)(h)", "Part 2 para 18 (safeguarding)", "meets Article 9(2)(h)"),
        ("9(2)(g)", "Part 1 para 2 (health or social care purposes)", "meets Article 9(2)(g)"),
        (["9(2)(h)", "9(2)(g)"], ["Part 1 para 2"], "meets Article 9(2)(g)"),
    ],
)
def test_mispaired_conditions_are_refused(
    tmp_path: Path, article9: Any, schedule1: Any, fragment: str
) -> None:
    value = {**NHS_BASIS, "ukGdprArticle9": article9, "dpa2018Schedule1": schedule1}
    assert any(fragment in p for p in problems(tmp_path, basis(value)))


def test_a_schedule_1_condition_without_its_article_9_is_refused(tmp_path: Path) -> None:
    value = {**NHS_BASIS, "ukGdprArticle9": "9(2)(g)"}
    value["dpa2018Schedule1"] = ["Part 2 para 18", "Part 1 para 2"]
    found = problems(tmp_path, basis(value))
    assert any("dpa2018Schedule1[1]" in p and "Article 9(2)(h)" in p for p in found), found


def test_the_register_shows_the_agreements_own_wording(tmp_path: Path) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    write_contract(folder / "c.yaml", RECIPIENT, basis(NHS_BASIS))
    [entry] = build_register(folder, tmp_path / "out", today=TODAY, governance=None)
    wording = entry["legal_basis_wording"]
    assert "UK GDPR Art 9(2)(h): Provision of health and social care." in wording
    assert any(w.startswith("Care Act 2014 s.42: Enquiry by local authority") for w in wording)


# --- 4. official organisation codes ------------------------------------------------------------


def codes(d: dict[str, Any]) -> None:
    term(d, "provider")["value"]["code"] = {"scheme": "ods", "value": "RXX"}
    term(d, "recipient")["value"]["code"] = {"scheme": "gss", "value": "E10000023"}


def test_codes_are_shown_published_and_carried_in_the_manifest(tmp_path: Path) -> None:
    c = contract(tmp_path, codes)
    assert str(c.provider.code) == "ODS RXX"
    assert "NHS ODS code RXX" in to_markdown(c, today=TODAY)
    assert "GSS code E10000023" in to_html(c, today=TODAY)
    facts = manifest.contract_facts(c)
    assert facts["provider_code"] == {"scheme": "ods", "value": "RXX"}
    assert facts["recipient_code"] == {"scheme": "gss", "value": "E10000023"}
    schema = manifest.schema()
    contract_schema = {**schema["properties"]["contract"], "$defs": schema["$defs"]}
    jsonschema.validate(facts, contract_schema)
    folder = tmp_path / "contracts"
    folder.mkdir()
    write_contract(folder / "c.yaml", RECIPIENT, codes)
    [entry] = build_register(folder, tmp_path / "out", today=TODAY, governance=None)
    assert "(NHS ODS code RXX)" in entry["parties"]["provider"]
    assert entry["parties"]["recipient_code"] == {"scheme": "gss", "value": "E10000023"}


def test_a_malformed_code_is_refused(tmp_path: Path) -> None:
    def bad(d: dict[str, Any]) -> None:
        term(d, "recipient")["value"]["code"] = {"scheme": "gss", "value": "RXX"}

    assert any(".code.value" in p and "GSS code" in p for p in problems(tmp_path, bad))


# --- 5. pseudonym scope ------------------------------------------------------------------------


def scope(value: str) -> Any:
    return lambda d: term(d, "pseudonymScope").update(value=value)


def pseudonyms(c: Contract) -> list[str]:
    out = Minimiser(c, pseudonym_key=PSEUDONYM_KEY)(batch(c, [False, False]))
    return out.column("person_ref").to_pylist()  # type: ignore[no-any-return]


def test_unstated_scope_keeps_existing_pseudonyms(tmp_path: Path) -> None:
    old = contract(tmp_path, name="old")
    expected = hmac.new(PSEUDONYM_KEY, b"P00000000", hashlib.sha256).hexdigest()[:32]
    assert pseudonyms(old)[0] == expected
    assert pseudonyms(contract(tmp_path, scope("shared"), name="shared")) == pseudonyms(old)
    assert manifest.contract_facts(old)["pseudonym_scope"] == "shared"
    assert "not stated: shared with every agreement" in to_markdown(old, today=TODAY)


def test_agreement_scope_pseudonyms_are_unique_to_the_agreement(tmp_path: Path) -> None:
    a = contract(tmp_path, scope("agreement"), name="a")
    other = contract(
        tmp_path, scope("agreement"), lambda d: d.update(id="another-agreement"), name="b"
    )
    derived = hmac.digest(PSEUDONYM_KEY, b"exchange pseudonym scope\n" + a.id.encode(), "sha256")
    assert transforms.agreement_key(PSEUDONYM_KEY, a.id) == derived
    expected = hmac.new(derived, b"P00000000", hashlib.sha256).hexdigest()[:32]
    assert pseudonyms(a)[0] == expected
    assert not set(pseudonyms(a)) & set(pseudonyms(other))
    assert manifest.contract_facts(a)["pseudonym_scope"] == "agreement"
    assert "unique to this agreement" in to_markdown(a, today=TODAY)


def test_the_documented_nhs_example_lints(tmp_path: Path) -> None:
    """docs/contracts.md's example of these terms is a valid set of sharing terms."""
    text = (REPO / "docs" / "contracts.md").read_text("utf-8")
    section = text.split("### Agreements as partners write them", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    documented = yaml.safe_load(block.group(1))["customProperties"]

    def edit(d: dict[str, Any]) -> None:
        for item in documented:
            term(d, item["property"])["value"] = item["value"]

    c = contract(tmp_path, edit)
    assert c.objections.override_column == "enquiry_open"
    assert c.pseudonym_scope == "agreement" and str(c.recipient.code) == "GSS E08000035"
