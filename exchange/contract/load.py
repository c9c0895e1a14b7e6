"""Load a contract file: safe YAML, the ODCS schema, the sharing terms, then meaning."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from croniter import croniter

from exchange import patterns
from exchange.contract import names, safe_yaml
from exchange.contract.canonical import _plain, canonical_sha256
from exchange.contract.legal import identifies_directly
from exchange.contract.model import (
    LOGICAL_TYPES,
    Condition,
    Contract,
    Endpoint,
    Field,
    LegalBasis,
    Objections,
    OrganisationCode,
    Party,
    Statute,
)
from exchange.contract.paths import custom_properties, custom_values, format_path
from exchange.contract.policy import policy_problems
from exchange.contract.vocabulary import PURPOSES, TRANSFORMS, units
from exchange.contract.vocabulary.schemas import field_terms_schema
from exchange.contract.vocabulary.terms import source_time_zone
from exchange.contract.vocabulary.transforms import option_problems
from exchange.errors import ContractError, Problem

API_VERSION = "v3.1.0"
PAYLOAD_FORMATS = ("csv", "parquet")


@cache
def _validator(package: str, name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files(package).joinpath(name).read_text("utf-8"))
    return _checked_by(schema)


@cache
def _field_terms_validator() -> jsonschema.protocols.Validator:
    return _checked_by(field_terms_schema())


def _checked_by(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    draft = jsonschema.validators.validator_for(schema)
    return patterns.schema_validator(schema, format_checker=draft.FORMAT_CHECKER)


def _odcs_validator() -> jsonschema.protocols.Validator:
    return _validator("open_data_contract_standard", "schema.json")


def _schema_problems(
    validator: jsonschema.protocols.Validator,
    instance: Any,
    file: str,
    prefix: Callable[[list[Any]], list[Any]] | None = None,
) -> Iterator[Problem]:
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        # For anyOf/oneOf, the most specific sub-error says what is really wrong.
        if error.context:
            error = jsonschema.exceptions.best_match(error.context) or error
        path = list(error.absolute_path)
        yield Problem(file, format_path(prefix(path) if prefix else path), error.message)


def read_document(path: Path) -> dict[str, Any]:
    """Parse a contract file with the contract loader; every problem becomes a ContractError."""
    try:
        document = safe_yaml.load_file(path)
    except safe_yaml.YamlRefused as exc:
        raise ContractError([Problem(str(path), w, m) for w, m in exc.problems]) from None
    return _plain_mapping(document)


def parse_text(text: str, label: str) -> dict[str, Any]:
    """Parse contract text with the contract loader; `label` names it in problems."""
    try:
        document = safe_yaml.load_text(text)
    except safe_yaml.YamlRefused as exc:
        raise ContractError([Problem(label, w, m) for w, m in exc.problems]) from None
    return _plain_mapping(document)


def _plain_mapping(document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _plain(document)
    return result


def load_contract(path: str | Path) -> Contract:
    """Load and fully check a contract; raise ContractError listing every problem."""
    path = Path(path)
    document = read_document(path)
    problems = list(check_document(document, str(path)))
    if problems:
        raise ContractError(problems)
    return _build(path, document)


def check_document(document: dict[str, Any], file: str) -> Iterator[Problem]:
    """Yield every problem in a parsed contract, ODCS schema first, then the sharing terms."""
    yield from names.name_problems(document, file)  # whatever else is wrong
    odcs = list(_schema_problems(_odcs_validator(), document, file))
    yield from odcs
    if document.get("apiVersion") != API_VERSION:
        yield Problem(file, "apiVersion", f"must be {API_VERSION!r} (ODCS v3.1)")
    if odcs:
        return  # the meaning checks below rely on the ODCS shape
    yield from _check_terms(document, file)
    yield from _check_schema(document, file)
    yield from _check_servers(document, file)
    retention = [
        i
        for i, s in enumerate(document.get("slaProperties") or [])
        if s.get("property") == "retention"
    ]
    if not retention:
        yield Problem(
            file,
            "slaProperties",
            "the retention period is missing: add {property: retention, value: N, unit: y|m|d}",
        )
    elif (days := units.period_days(*_amount(document["slaProperties"][retention[0]]))) is None:
        known = ", ".join(u.spellings[0] for u in units.UNITS)
        yield Problem(
            file,
            f"slaProperties[{retention[0]}]",
            f"the retention period must be a number of a unit the gateway knows ({known})",
        )
    elif days > units.MAX_DAYS:
        yield Problem(
            file,
            f"slaProperties[{retention[0]}]",
            f"the retention period is longer than {units.MAX_DAYS} days (100 years), the most "
            "a manifest states: shorten it",
        )
    if len(retention) > 1:  # per-element entries are not read: one period binds the recipient
        yield Problem(
            file,
            f"slaProperties[{retention[1]}]",
            f"a second retention period (the first is slaProperties[{retention[0]}]): "
            "give exactly one",
        )
    yield from _quality_problems(document, file)
    yield from policy_problems(document, file)


def _quality_problems(document: dict[str, Any], file: str) -> Iterator[Problem]:
    """The parts of quality rules the gateway enforces, in the shapes it can enforce."""
    schema = document.get("schema") or []
    if len(schema) != 1:
        return  # reported by the schema check
    dataset = schema[0]
    rules: list[tuple[list[Any], Any]] = [
        (["schema", 0, "quality", i], q) for i, q in enumerate(dataset.get("quality") or [])
    ]
    for i, prop in enumerate(dataset.get("properties") or []):
        at: list[Any] = ["schema", 0, "properties", i]
        options = prop.get("logicalTypeOptions") or {}
        if "pattern" in options:
            yield from _pattern_problems(file, [*at, "logicalTypeOptions", "pattern"], options)
        rules += [([*at, "quality", j], q) for j, q in enumerate(prop.get("quality") or [])]
    for at, rule in rules:
        args = rule.get("arguments") or {}
        if "validValues" in args and not (
            isinstance(args["validValues"], list)
            and all(isinstance(v, str | int | float | bool) for v in args["validValues"])
        ):
            where = format_path([*at, "arguments", "validValues"])
            yield Problem(file, where, "must be a list of values (text, numbers or true/false)")
        if "pattern" in args:
            yield from _pattern_problems(file, [*at, "arguments", "pattern"], args)
        if rule.get("metric") == "rowCount":
            for key in _BOUNDS:
                value = rule.get(key)
                bounds = value if isinstance(value, list) else [value]
                if key in rule and not all(isinstance(b, int) for b in bounds):
                    where = format_path([*at, key])
                    yield Problem(file, where, "a row count bound must be a whole number")
        if rule.get("metric") == "duplicateValues" and ("properties" in args or len(at) == 4):
            yield from _composite_key_problems(file, at, args, dataset)


_BOUNDS = (
    "mustBeBetween",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
)


def _composite_key_problems(
    file: str, at: list[Any], args: dict[str, Any], dataset: dict[str, Any]
) -> Iterator[Problem]:
    """A schema-level duplicateValues rule names a composite key: properties of this schema."""
    where = [*at, "arguments", "properties"]
    if len(at) != 4:  # on a property, duplicateValues is that property's own uniqueness
        yield Problem(
            file, format_path(where), "a key of several properties goes in schema[0].quality"
        )
        return
    key = args.get("properties")
    if not isinstance(key, list) or not key or not all(isinstance(k, str) for k in key):
        yield Problem(file, format_path(where), "must list the key's property names")
        return
    names = {p.get("name") for p in dataset.get("properties") or [] if isinstance(p, dict)}
    for i, name in enumerate(key):
        if name not in names:
            yield Problem(
                file, format_path([*where, i]), f"{name!r} is not a property of the schema"
            )
        elif name in key[:i]:
            yield Problem(file, format_path([*where, i]), f"{name!r} is listed twice")


def _pattern_problems(file: str, at: list[Any], holder: dict[str, Any]) -> Iterator[Problem]:
    # Checked by RE2, the engine the rules run it with (validators.expectations.pattern_mask).
    pattern = holder["pattern"]
    if not isinstance(pattern, str):
        yield Problem(file, format_path(at), "must be a regular expression (text)")
        return
    reason = patterns.problem(pattern)
    if reason is not None:
        yield Problem(
            file,
            format_path(at),
            f"not a valid regular expression in RE2 syntax, which the quality rules use "
            f"({reason}; RE2 has no lookaround or backreferences)",
        )


def _check_terms(document: dict[str, Any], file: str) -> Iterator[Problem]:
    custom = custom_properties(document.get("customProperties"))
    terms = {key: value for key, (_, value) in custom.items()}

    def located(path: list[Any]) -> list[Any]:
        if path and path[0] in custom:
            return ["customProperties", custom[path[0]][0], "value", *path[1:]]
        return ["customProperties", *path]

    yield from _schema_problems(
        _validator("exchange.contract", "terms.schema.json"), terms, file, located
    )
    for i, code in enumerate(_list(terms.get("purposes"))):
        if isinstance(code, str) and code not in PURPOSES:
            yield Problem(
                file,
                format_path(located(["purposes", i])),
                f"unknown purpose code {code!r}; use one of: {', '.join(sorted(PURPOSES))}",
            )
    schedule = terms.get("schedule")
    if isinstance(schedule, str) and not croniter.is_valid(schedule):
        yield Problem(file, format_path(located(["schedule"])), f"not a valid cron: {schedule!r}")
    for i, key in enumerate(_list(terms.get("recipientKeys"))):
        if isinstance(key, str) and not _is_age_recipient(key):
            yield Problem(
                file, format_path(located(["recipientKeys", i])), "not a valid age recipient"
            )
    zone, _ = source_time_zone(terms.get("sourceTimeZone"))
    if isinstance(zone, str) and not _is_time_zone(zone):
        where = ["sourceTimeZone", *(["zone"] if isinstance(terms["sourceTimeZone"], dict) else [])]
        message = f"unknown IANA time zone {zone!r} (e.g. Europe/London)"
        yield Problem(file, format_path(located(where)), message)


def _is_time_zone(name: str) -> bool:
    """Whether the time-zone database here knows `name` (pyarrow reads the same one)."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _list(value: Any) -> list[Any]:
    """The value if it is a list (a wrong type was already reported by the schema)."""
    return value if isinstance(value, list) else []


def _is_age_recipient(key: str) -> bool:
    import pyrage

    try:
        pyrage.x25519.Recipient.from_str(key)
    except pyrage.RecipientError:
        return False
    return True


def _check_schema(document: dict[str, Any], file: str) -> Iterator[Problem]:
    schema = document.get("schema") or []
    if len(schema) != 1:
        yield Problem(file, "schema", "exactly one schema object (the shared dataset) is required")
        return
    properties = schema[0].get("properties") or []
    if not properties:
        yield Problem(file, "schema[0].properties", "the dataset has no fields")
    field_terms = _field_terms_validator()
    names: set[str] = set()
    subject_keys = 0
    uses_pseudonyms = False
    reads: dict[str, str] = {}  # source column -> the logicalType the fields read it as
    renamed: dict[str, str] = {}  # outgoing field name -> its differently named source column
    for i, prop in enumerate(properties):
        at: list[Any] = ["schema", 0, "properties", i]
        custom = custom_properties(prop.get("customProperties"))
        terms = {key: value for key, (_, value) in custom.items()}

        def located(
            path: list[Any], custom: dict[str, tuple[int, Any]] = custom, at: list[Any] = at
        ) -> list[Any]:
            if path and path[0] in custom:
                return [*at, "customProperties", custom[path[0]][0], "value", *path[1:]]
            return [*at, "customProperties", *path]

        yield from _schema_problems(field_terms, terms, file, located)
        name = prop.get("name")
        if name in names:
            yield Problem(file, format_path([*at, "name"]), f"duplicate field name {name!r}")
        names.add(name)
        if "logicalType" not in prop:
            yield Problem(file, format_path(at), "logicalType is required for every field")
        elif prop["logicalType"] not in LOGICAL_TYPES:
            yield Problem(
                file,
                format_path([*at, "logicalType"]),
                f"{prop['logicalType']!r} cannot be exchanged: "
                f"use one of {', '.join(LOGICAL_TYPES)}",
            )
        transform = terms.get("transform")
        options = terms.get("transformOptions")
        spec = TRANSFORMS.get(transform) if isinstance(transform, str) else None
        # A malformed transform was already reported by the schema.
        produced = spec.output_type(options) if spec else None
        if produced and prop.get("logicalType") not in (None, produced):
            yield Problem(
                file,
                format_path([*at, "logicalType"]),
                f"transform {transform!r} produces {produced!r}, not {prop.get('logicalType')!r}",
            )
        uses_pseudonyms |= transform == "pseudonymise"
        subject_keys += bool(terms.get("subjectKey"))
        yield from _transform_problems(file, prop, terms, located, reads, renamed)
    if subject_keys != 1:
        yield Problem(
            file,
            "schema[0].properties",
            f"exactly one field must be marked subjectKey (found {subject_keys})",
        )
    custom = custom_properties(document.get("customProperties"))
    if uses_pseudonyms and "pseudonymisationKey" not in custom:
        yield Problem(
            file,
            "customProperties",
            "a field is pseudonymised: name the key's secret in 'pseudonymisationKey'",
        )
    if "filters" in custom:
        from exchange import filters  # pyarrow.compute, only for contracts with filters

        index, specs = custom["filters"]
        objections = custom.get("objections", (0, None))[1]
        column = objections.get("column") if isinstance(objections, dict) else None
        flag = "string" if isinstance(objections, dict) and "objectedValues" in objections else ""
        known = {**({column: flag or "boolean"} if isinstance(column, str) else {}), **reads}
        condition = objections.get("overrideCondition") if isinstance(objections, dict) else None
        if isinstance(condition, dict) and isinstance(condition.get("column"), str):
            known.setdefault(condition["column"], "string")
        for path, message in filters.problems(specs, known, renamed):
            where = format_path(["customProperties", index, "value", *path])
            yield Problem(file, where, message)


def _transform_problems(
    file: str,
    prop: dict[str, Any],
    terms: dict[str, Any],
    located: Callable[[list[Any]], list[Any]],
    reads: dict[str, str],
    renamed: dict[str, str],
) -> Iterator[Problem]:
    """A field's transform against its options, its type and the other fields' reads."""
    transform, options, logical = terms.get("transform"), terms.get("transformOptions"), None
    name, source = prop.get("name"), prop.get("physicalName", prop.get("name"))
    if isinstance(name, str) and isinstance(source, str) and name != source:
        renamed[name] = source
    if prop.get("logicalType") in LOGICAL_TYPES:
        logical = prop["logicalType"]
    spec = TRANSFORMS.get(transform) if isinstance(transform, str) else None
    if spec is None or logical is None:
        return  # already reported by the field-terms schema or the logicalType check
    if isinstance(options, dict):
        for path, message in option_problems(spec.name, options, logical):
            yield Problem(file, format_path(located(["transformOptions", *path])), message)
    if transform == "hash" and identifies_directly(terms, source):
        yield Problem(
            file,
            format_path(located(["transform"])),
            f"{name} identifies a person: anyone can reverse an unkeyed hash of it by hashing "
            "every possible value; use pseudonymise",
        )
    if isinstance(source, str):
        read = spec.reads_as or logical
        first = reads.setdefault(source, read)
        if first != read:
            yield Problem(
                file,
                format_path(located([])),  # the field's customProperties
                f"source column {source} is read as {first} for another field and as {read} "
                "here: one column is read as one type",
            )


def _check_servers(document: dict[str, Any], file: str) -> Iterator[Problem]:
    sftp = [(i, s) for i, s in enumerate(document.get("servers") or []) if s.get("type") == "sftp"]
    if len(sftp) != 1:
        yield Problem(
            file, "servers", "exactly one server of type 'sftp' (the recipient) is needed"
        )
        return
    i, server = sftp[0]
    if server.get("format", "csv") not in PAYLOAD_FORMATS:
        yield Problem(file, f"servers[{i}].format", f"must be one of {', '.join(PAYLOAD_FORMATS)}")


def _frozen(value: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _build(path: Path, document: dict[str, Any]) -> Contract:
    terms = custom_values(document["customProperties"])
    dataset = document["schema"][0]
    fields = []
    for i, prop in enumerate(dataset["properties"]):
        ft = custom_values(prop.get("customProperties"))
        fields.append(
            Field(
                name=prop["name"],
                source=prop.get("physicalName", prop["name"]),
                logical_type=prop["logicalType"],
                transform=ft["transform"],
                transform_options=_frozen(ft.get("transformOptions")),
                required=bool(prop.get("required", False)),
                unique=bool(prop.get("unique", False)),
                subject_key=bool(ft.get("subjectKey", False)),
                classification=prop.get("classification"),
                type_options=_frozen(prop.get("logicalTypeOptions")),
                quality=tuple(_frozen(q) for q in prop.get("quality") or []),
                path=f"schema[0].properties[{i}]",
            )
        )
    server = next(s for s in document["servers"] if s["type"] == "sftp")
    url = urlsplit(server["location"])
    basis = terms["legalBasis"]
    objections = terms["objections"]
    retention = next(s for s in document["slaProperties"] if s["property"] == "retention")
    return Contract(
        path=path,
        document=MappingProxyType(document),
        sha256=canonical_sha256(document),
        id=document["id"],
        name=document.get("name", document["id"]),
        version=document["version"],
        status=document.get("status", "draft"),
        purpose=(document.get("description") or {}).get("purpose", ""),
        purposes=tuple(terms["purposes"]),
        provider=_party(terms["provider"]),
        recipient=_party(terms["recipient"]),
        legal_basis=_legal_basis(basis),
        objections=_objections(objections),
        schedule=terms["schedule"],
        review_date=dt.date.fromisoformat(terms["reviewDate"]),
        recipient_keys=tuple(terms["recipientKeys"]),
        endpoint=Endpoint(
            server=server.get("server", "recipient"),
            host=url.hostname or "",
            folder=url.path.strip("/"),
            format=server.get("format", "csv"),
            connection=terms["sftpConnection"],
            host_keys=tuple(custom_values(server.get("customProperties")).get("hostKeys") or ()),
            type=str(server.get("type", "sftp")),
        ),
        pseudonymisation_key=terms.get("pseudonymisationKey"),
        pseudonym_scope=terms.get("pseudonymScope"),
        dataset=dataset["name"],
        source_name=dataset.get("physicalName", dataset["name"]),
        fields=tuple(fields),
        dataset_quality=tuple(_frozen(q) for q in dataset.get("quality") or []),
        retention=f"{retention['value']} {retention.get('unit', '')}".strip(),
        retention_days=_float(units.period_days(*_amount(retention))),
        sender_manages_inbox=bool(terms.get("senderManagesInbox", False)),
        incremental_column=(terms.get("incremental") or {}).get("column"),
        source_time_zone=source_time_zone(terms.get("sourceTimeZone"))[0],
        ambiguous_times=source_time_zone(terms.get("sourceTimeZone"))[1],
        retention_action=terms["retentionAction"],
        dpia_reference=terms["dpiaReference"],
        acknowledgements=_frozen(terms["acknowledgements"])
        if "acknowledgements" in terms
        else None,
        filters=tuple(_frozen(f) for f in terms.get("filters") or ()),
    )


def _amount(item: Any) -> tuple[Any, Any]:
    """The value and unit of a retention slaProperty."""
    return (item.get("value"), item.get("unit")) if isinstance(item, dict) else (None, None)


def _float(days: Any) -> float | None:
    return None if days is None else float(days)


def _party(value: dict[str, Any]) -> Party:
    code = value.get("code")
    official = OrganisationCode(code["scheme"], code["value"]) if code else None
    return Party(value["organisation"], value["contact"], value.get("department"), official)


def _conditions(value: Any) -> tuple[Condition, ...]:
    """A legal condition term (one text, or a list of texts or {condition, wording})."""
    listed = value if isinstance(value, list) else [] if value is None else [value]
    return tuple(
        Condition(v["condition"], v.get("wording")) if isinstance(v, dict) else Condition(v)
        for v in listed
    )


def _legal_basis(basis: dict[str, Any]) -> LegalBasis:
    article9 = _conditions(basis.get("ukGdprArticle9"))
    schedule1 = _conditions(basis.get("dpa2018Schedule1"))
    return LegalBasis(
        statutes=tuple(
            Statute(s["act"], s["section"], s.get("title"), s.get("wording"))
            for s in basis["statutes"]
        ),
        article6=basis["ukGdprArticle6"],
        article9=article9[0].code if article9 else None,
        dpa2018_schedule1=schedule1[0].code if schedule1 else None,
        article9_conditions=article9,
        schedule1_conditions=schedule1,
    )


def _objections(value: dict[str, Any]) -> Objections:
    condition = value.get("overrideCondition") or {}
    objected = value.get("objectedValues")
    return Objections(
        column=value["column"],
        overridden=value["legalBasisOverrides"],
        justification=value.get("overrideJustification"),
        list=value.get("list"),
        objected_values=tuple(objected) if objected is not None else None,
        empty_means=value.get("emptyMeans"),
        override_column=condition.get("column"),
        override_values=tuple(condition.get("values") or ()),
    )
