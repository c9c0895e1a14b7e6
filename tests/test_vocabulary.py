"""Each vocabulary is declared once: every term, transform and retention unit is covered by lint,
diff, render, the register, the manifest schema and docs/contracts.md, or these tests fail."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from conftest import SAMPLE, write_contract

from exchange import transforms
from exchange.contract import load_contract, read_document
from exchange.contract.diff import diff_documents
from exchange.contract.render import to_html, to_markdown
from exchange.contract.vocabulary import RETENTION_UNITS, TRANSFORMS
from exchange.contract.vocabulary import generate as generated
from exchange.contract.vocabulary.schemas import manifest_transforms
from exchange.contract.vocabulary.terms import TERMS
from exchange.contract.vocabulary.units import period_days
from exchange.register import build_register

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
TODAY = dt.date(2025, 1, 1)
REPO = Path(__file__).resolve().parents[1]
TERMS_SCHEMA = REPO / "exchange" / "contract" / "terms.schema.json"


def with_term(name: str, value: Any) -> Any:
    """An edit setting the top-level term `name` to `value`."""

    def edit(document: dict[str, Any]) -> None:
        custom = document["customProperties"]
        item = next((p for p in custom if p["property"] == name), None)
        if item is None:
            custom.append({"property": name, "value": copy.deepcopy(value)})
        else:
            item["value"] = copy.deepcopy(value)
        if name == "pseudonymisationKey" or name == "filters":
            return
        if name == "objections":  # keep the sample's column, so only the example's keys differ
            item_value = next(p for p in custom if p["property"] == name)["value"]
            item_value["column"] = "objection"

    return edit


def pages(tmp_path: Path, name: str, edit: Any) -> tuple[str, str]:
    """The Markdown and HTML of a contract, its hash blanked (it changes with any edit)."""
    path = write_contract(tmp_path / f"{name}.yaml", RECIPIENT, edit)
    contract = load_contract(path)
    md = to_markdown(contract, today=TODAY).replace(contract.sha256, "SHA")
    page = to_html(contract, today=TODAY).replace(contract.sha256, "SHA")
    return md, page


# --- terms -------------------------------------------------------------------------------------


def test_every_term_is_in_the_schema_and_the_schema_has_no_other() -> None:
    schema = json.loads(TERMS_SCHEMA.read_text("utf-8"))
    assert set(TERMS) == set(schema["properties"])
    required = {t.name for t in TERMS.values() if t.required == "yes"}
    assert required == set(schema["required"])


@pytest.mark.parametrize("name", list(TERMS))
def test_lint_accepts_each_terms_example(tmp_path: Path, name: str) -> None:
    load_contract(
        write_contract(tmp_path / "c.yaml", RECIPIENT, with_term(name, TERMS[name].example))
    )


@pytest.mark.parametrize("name", list(TERMS))
def test_diff_judges_every_term(tmp_path: Path, name: str) -> None:
    """A change to any term (and each key inside it) is classified, never 'not a term'."""
    old = read_document(write_contract(tmp_path / "old.yaml", RECIPIENT))
    new = read_document(
        write_contract(tmp_path / "new.yaml", RECIPIENT, with_term(name, TERMS[name].example))
    )
    changes = diff_documents(old, new)
    assert changes, name
    assert not [c.summary for c in changes if c.kind == "unclassified"]
    back = diff_documents(new, old)  # and the other way: removing or restoring it
    assert back and not [c.summary for c in back if c.kind == "unclassified"]


@pytest.mark.parametrize("name", list(TERMS))
def test_render_shows_every_term_but_no_secret_name(tmp_path: Path, name: str) -> None:
    """An officer and the public see each term change, and never a secret's name."""
    term = TERMS[name]
    before = pages(tmp_path, "old", None)
    after = pages(tmp_path, "new", with_term(name, term.example))
    if term.shown_in is None:
        assert all(term.example not in p for p in after)
    else:
        assert before[0] != after[0] and before[1] != after[1], name
    if term.words is not None:
        words = term.words(term.example)
        assert words in after[1].replace("&#x27;", "'")
        assert words in after[0].replace("\\", "")


def test_register_says_when_the_sender_may_delete_files(tmp_path: Path) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    write_contract(folder / "c.yaml", RECIPIENT, with_term("senderManagesInbox", True))
    entries = build_register(folder, tmp_path / "out", today=TODAY, governance=None)
    [entry] = entries
    assert any("may delete files on the recipient's server" in t for t in entry["terms"])
    page = (tmp_path / "out" / entry["pages"]["html"]).read_text("utf-8")
    assert "may delete files on the recipient&#x27;s server" in page


@pytest.mark.parametrize("name", [t.name for t in TERMS.values() if t.register])
def test_register_publishes_each_register_term(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    write_contract(folder / "c.yaml", RECIPIENT, with_term(name, TERMS[name].example))
    [entry] = build_register(folder, tmp_path / "out", today=TODAY, governance=None)
    words = TERMS[name].words
    assert words is not None and words(TERMS[name].example) in entry["terms"]


# --- transforms --------------------------------------------------------------------------------


def test_transform_module_and_schemas_list_every_transform() -> None:
    assert set(transforms.KINDS) == set(TRANSFORMS)
    for path in (
        REPO / "exchange" / "manifest.schema.json",
        REPO / "docs" / "manifest.schema.json",
    ):
        assert manifest_transforms(path) == list(TRANSFORMS), path
    schema = json.loads((REPO / "exchange/contract/field-terms.schema.json").read_text("utf-8"))
    assert schema["properties"]["transform"]["enum"] == list(TRANSFORMS)


def field_edit(name: str, transform: str, options: dict[str, Any]) -> Any:
    """An edit making the sample's `name` field use `transform` with `options`."""

    def edit(document: dict[str, Any]) -> None:
        prop = next(p for p in document["schema"][0]["properties"] if p["name"] == name)
        custom = [{"property": "transform", "value": transform}]
        if options:
            custom.append({"property": "transformOptions", "value": options})
        prop["customProperties"] = custom
        prop.pop("logicalTypeOptions", None)
        prop.pop("quality", None)
        spec = TRANSFORMS[transform]
        output = spec.output_type(options)
        prop["logicalType"] = output or ("number" if spec.accepts else "string")
        if spec.reads_as == "date" or transform == "keep":
            prop["logicalType"] = output or "date"
        prop["physicalName"] = "probe_source"
        prop["name"] = "probe"

    return edit


def _sample_field() -> str:
    document = yaml.safe_load(SAMPLE.read_text("utf-8"))
    props = document["schema"][0]["properties"]
    return next(p["name"] for p in props if not _is_subject_key(p))


def _is_subject_key(prop: dict[str, Any]) -> bool:
    return any(
        c["property"] == "subjectKey" and c["value"] for c in prop.get("customProperties", [])
    )


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_lint_diff_and_render_cover_every_transform(tmp_path: Path, name: str) -> None:
    """Each transform lints, is judged by diff against keep and its own options, and is shown."""
    spec = TRANSFORMS[name]
    target = _sample_field()
    path = write_contract(
        tmp_path / "t.yaml", RECIPIENT, field_edit(target, name, dict(spec.example))
    )
    contract = load_contract(path)
    words = spec.words(spec.example)
    assert words and words in to_markdown(contract, today=TODAY).replace("\\", "")
    kept = read_document(
        write_contract(tmp_path / "k.yaml", RECIPIENT, field_edit(target, "keep", {}))
    )
    kinds = {c.kind for c in diff_documents(kept, read_document(path))}
    if name != "keep":
        assert "transform-strengthened" in kinds, kinds
    assert spec.phrase(spec.example) and "transformed by" not in spec.phrase(spec.example)
    assert name in generated.transforms_table()


def test_round_rounds_numbers_vectorised() -> None:
    by_five = transforms.build("round", {"multiple": 5}, key=None)
    assert by_five(pa.array([17, 12.5, None])).to_pylist() == [15, 15, None]
    places = transforms.build("round", {"decimals": 1}, key=None)
    assert places(pa.array([3.14159, 2.25])).to_pylist() == [3.1, 2.3]
    assert by_five(pa.array([17, 13], pa.int64())).type == pa.int64()


@pytest.mark.parametrize(
    ("old", "new", "direction"),
    [
        ({"multiple": 5}, {"multiple": 10}, 1),
        ({"multiple": 10}, {"multiple": 5}, -1),
        ({"decimals": 2}, {"decimals": 1}, 1),
        ({"decimals": 1}, {"multiple": 1}, None),
    ],
)
def test_round_option_changes_are_judged(old: Any, new: Any, direction: int | None) -> None:
    assert TRANSFORMS["round"].compare(old, new) == direction


# --- retention units ---------------------------------------------------------------------------


@pytest.mark.parametrize("unit", sorted(RETENTION_UNITS))
def test_every_retention_unit_loads_diffs_renders_and_expires(tmp_path: Path, unit: str) -> None:
    """A unit diff and render understand is one the expiry command can use, and docs list."""

    def edit(document: dict[str, Any]) -> None:
        retention = next(p for p in document["slaProperties"] if p["property"] == "retention")
        retention.update(value=6, unit=unit)

    path = write_contract(tmp_path / "u.yaml", RECIPIENT, edit)
    contract = load_contract(path)
    assert contract.retention_days == float(period_days(6, unit) or 0) > 0
    md = to_markdown(contract, today=TODAY)
    assert f"for 6 {RETENTION_UNITS[unit].name}s" in md
    changes = diff_documents(
        read_document(write_contract(tmp_path / "o.yaml", RECIPIENT)), read_document(path)
    )
    assert "retention-changed" not in {c.kind for c in changes}
    assert f"`{unit}`" in (REPO / "docs" / "contracts.md").read_text("utf-8")


def test_an_unknown_retention_unit_is_a_lint_problem(tmp_path: Path) -> None:
    def edit(document: dict[str, Any]) -> None:
        retention = next(p for p in document["slaProperties"] if p["property"] == "retention")
        retention.update(value=6, unit="fortnights")

    with pytest.raises(Exception, match="retention period must be a number"):
        load_contract(write_contract(tmp_path / "u.yaml", RECIPIENT, edit))


# --- generated files ---------------------------------------------------------------------------


def test_generated_files_are_current() -> None:
    """docs/contracts.md tables and the schemas match the registries (run the generator)."""
    assert generated.stale() == []


def test_docs_document_every_term_and_transform() -> None:
    docs = (REPO / "docs" / "contracts.md").read_text("utf-8")
    for name in [*TERMS, *TRANSFORMS]:
        assert re.search(rf"\| `{re.escape(name)}` \|", docs), name


def test_the_contract_loaders_logical_types_are_the_arrow_mappings() -> None:
    """The loader checks logicalTypes against a pyarrow-free copy of the names."""
    from exchange.contract.model import LOGICAL_TYPES
    from exchange.types import ARROW_TYPES

    assert set(LOGICAL_TYPES) == set(ARROW_TYPES)
