"""The transform registry: every minimisation transform, declared once.

Each entry says what the transform takes (its options' JSON schema), what it reads and produces,
how to build its vectorised function, how a change to it is judged (`rank` across transforms,
`compare` for an option change), and how it reads in words. Lint, the field-terms schema, the
manifest schema, diff, render and docs/contracts.md are built from or tested against it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from exchange.contract.vocabulary.shapes import record

Options = Mapping[str, Any]
Problems = Iterator[tuple[list[str | int], str]]
# +1: the new options disclose less; -1: more; 0: the same; None: cannot tell.
Direction = int | None


@dataclass(frozen=True)
class BuildContext:
    """What building a transform may need beyond its options."""

    key: bytes | None = None
    today: Any = None  # the run date (dt.date), for age bands


@dataclass(frozen=True)
class TransformSpec:
    """One transform: its vocabulary, its function, and how it is judged and shown."""

    name: str
    sends: str  # docs: what goes out, one line
    build: Callable[[Options, BuildContext], Any]  # -> a function from Arrow array to array
    words: Callable[[Options], str]  # for the IG officer and the public
    phrase: Callable[[Options], str]  # short, for a diff line: "generalised to year"
    options: Mapping[str, Any] | None = None  # JSON schema of transformOptions (None: none)
    outputs: Mapping[str, str | None] = field(default_factory=lambda: {"": "string"})
    reads_as: str | None = "string"  # None: the field's own logicalType
    accepts: tuple[str, ...] | None = None  # logicalTypes it can read (None: any)
    rank: Callable[[Options], int | None] = lambda options: None  # across transforms
    compare: Callable[[Options, Options], Direction] = lambda old, new: 0 if old == new else None
    example: Mapping[str, Any] = field(default_factory=dict)  # valid options, for docs and tests
    problems: Callable[[Options, str], Problems] = lambda options, logical: iter(())
    needs_today: Callable[[Options], bool] = lambda options: False

    def output_type(self, options: Any) -> str | None:
        """The logicalType this transform produces with these options (None: its input's)."""
        to = options.get("to", "") if isinstance(options, Mapping) else ""
        return self.outputs.get(to) if isinstance(to, str) else None


def _fn() -> Any:
    """The vectorised functions (imported late: pyarrow is not needed to read a contract)."""
    from exchange import transforms

    return transforms


def bounds_problem(bounds: Any) -> str | None:
    """What is wrong with a list of band bounds, if anything."""
    if not isinstance(bounds, list | tuple) or not bounds:
        return "bands must be a list of at least one whole number"
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return "bands must be whole numbers"
    if any(b >= c for b, c in itertools.pairwise(bounds)):
        return "bands must be in increasing order, each listed once"
    if len(bounds) > 100:
        return "at most 100 bands"
    return None


def band_labels(bounds: Any) -> list[str]:
    """Band bounds [0, 50, 90] as the labels "0-49", "50-89", "90+"."""
    if bounds_problem(bounds):
        return ["as the contract lists"]
    labels = []
    for lower, upper in zip(bounds, [*bounds[1:], None], strict=True):
        if upper is None:
            labels.append(f"{lower}+")
        else:
            labels.append(str(lower) if upper - lower == 1 else f"{lower}-{upper - 1}")
    return labels


def _bands_problems(options: Options) -> Problems:
    problem = bounds_problem(options["bands"]) if "bands" in options else None
    if problem:  # a missing list is reported by the schema
        yield ["bands"], problem


def _coarser(old: Any, new: Any) -> Direction:
    """Bands merged (new bounds a subset) disclose less; split, more."""
    if not isinstance(old, list) or not isinstance(new, list):
        return None
    if set(new) == set(old):
        return 0
    if set(new) <= set(old):
        return 1
    return -1 if set(new) >= set(old) else None


def _by_number(key: str, smaller_is_stronger: bool) -> Callable[[Options, Options], Direction]:
    """Compare one numeric option: which way discloses less."""

    def compare(old: Options, new: Options) -> Direction:
        a, b = old.get(key), new.get(key)
        if set(old) != set(new) or not isinstance(a, int | float) or not isinstance(b, int | float):
            return None
        if a == b:
            return 0
        return 1 if (b < a) == smaller_is_stronger else -1

    return compare


def _no_options(name: str, sends: str, words: str, phrase: str, **more: Any) -> TransformSpec:
    build = more.pop("build")
    return TransformSpec(
        name, sends, build, lambda o: words, lambda o: phrase, compare=lambda o, n: 0, **more
    )


# generalise-date ----------------------------------------------------------------------------

_DATE_WORDS: Final = {
    "year": "Generalised to the year only (for example 2012): the day and month are never sent.",
    "year-month": (
        "Generalised to the year and month (for example 2012-01): the day is never sent."
    ),
}
_DATE_RANK: Final = {"year-month": 2, "year": 3}


def _date_words(options: Options) -> str:
    to = options.get("to")
    if to == "age-band":
        bands = ", ".join(band_labels(options.get("bands")))
        return (
            f"Sent as an age band on the day of the run ({bands}): the date itself is never sent."
        )
    return _DATE_WORDS.get(str(to), f"Generalised to {to}.")


def _date_compare(old: Options, new: Options) -> Direction:
    if old.get("to") == new.get("to") == "age-band":
        return _coarser(old.get("bands"), new.get("bands"))
    a, b = _DATE_RANK.get(str(old.get("to"))), _DATE_RANK.get(str(new.get("to")))
    return None if a is None or b is None else (b > a) - (b < a)


def _date_build(options: Options, ctx: BuildContext) -> Any:
    to, bands = str(options.get("to", "")), options.get("bands") or ()
    return _fn().generalise_date(to, bands=bands, today=ctx.today)


# map ----------------------------------------------------------------------------------------


def _map_words(options: Options) -> str:
    table = options.get("map")
    codes = len(table) if isinstance(table, Mapping) else 0
    if "default" not in options:
        other = "any other value stops the run"
    elif options["default"] is None:
        other = "any other value is sent empty"
    else:
        other = f"any other value is sent as {options['default']}"
    return f"Replaced using the contract's table of {codes} codes; {other}."


def _map_build(options: Options, ctx: BuildContext) -> Any:
    table = options.get("map")
    if not isinstance(table, Mapping) or not table:
        raise ValueError("map needs a non-empty map of codes to labels")
    default, strict = options.get("default"), "default" not in options
    return _fn().lookup(dict(table), default=default, strict=strict)


# top-code and round -------------------------------------------------------------------------


def _top_code_problems(options: Options, logical: str) -> Problems:
    maximum = options.get("max")
    if logical == "integer" and "max" in options and not isinstance(maximum, int):
        yield ["max"], "must be a whole number for an integer field"


def _round_words(options: Options) -> str:
    if "multiple" in options:
        return f"Rounded to the nearest multiple of {options['multiple']}."
    places = options.get("decimals")
    return f"Rounded to {places} decimal place{'' if places == 1 else 's'}."


def _round_compare(old: Options, new: Options) -> Direction:
    if "multiple" in old:
        return _by_number("multiple", smaller_is_stronger=False)(old, new)
    return _by_number("decimals", smaller_is_stronger=True)(old, new)


def _round_problems(options: Options, logical: str) -> Problems:
    if logical == "integer" and isinstance(options.get("multiple"), float):
        yield ["multiple"], "must be a whole number for an integer field"
    if logical == "integer" and "decimals" in options:
        yield ["decimals"], "an integer has no decimal places: use multiple"


_NUMBERS: Final = ("integer", "number")
_BANDS: Final = {
    "type": "array",
    "minItems": 1,
    "maxItems": 100,
    "uniqueItems": True,
    "items": {"type": "integer"},
}


SPECS: Final[tuple[TransformSpec, ...]] = (
    _no_options(
        "keep",
        "the value as it is",
        "Sent as it is in the source.",
        "kept in full",
        build=lambda o, ctx: _fn().keep(),
        outputs={"": None},
        reads_as=None,
        rank=lambda o: 0,
    ),
    _no_options(
        "pseudonymise",
        "HMAC-SHA256 with the agreement's key, first 32 hex characters, stable across runs",
        "Replaced by a pseudonym (a keyed HMAC-SHA256 hash, 32 hex characters): the same person "
        "gets the same pseudonym every run, and the recipient cannot reverse it.",
        "pseudonymised",
        build=lambda o, ctx: _fn().pseudonymise_with(ctx.key),
        rank=lambda o: 4,
    ),
    _no_options(
        "hash",
        "unkeyed SHA-256 (64 hex). **Not pseudonymisation**: refused on identifiers",
        "Replaced by its SHA-256 hash (64 hex characters). Not a pseudonym: anyone who has the "
        "same value can compute the same hash.",
        "hashed (unkeyed SHA-256)",
        build=lambda o, ctx: _fn().hash_(),
    ),
    TransformSpec(
        "generalise-date",
        "`{to: year}`: `2012`; `{to: year-month}`: `2012-05`; `{to: age-band, bands: "
        "[0,5,11,16,18]}`: the age at the run date as `0-4`, `5-10`, `11-15`, `16-17`, `18+`",
        _date_build,
        _date_words,
        lambda o: f"generalised to {o.get('to')}",
        options=record(
            ["to"],
            {
                "to": {"enum": ["year", "year-month", "age-band"]},
                "bands": {**_BANDS, "items": {"type": "integer", "minimum": 0, "maximum": 150}},
            },
            **{
                "if": {"properties": {"to": {"const": "age-band"}}},
                "then": {"required": ["bands"]},
                "else": {"not": {"required": ["bands"]}},
            },
        ),
        outputs={"year": "integer", "year-month": "string", "age-band": "string"},
        reads_as="date",
        rank=lambda o: _DATE_RANK.get(str(o.get("to"))),
        compare=_date_compare,
        example={"to": "year"},
        problems=lambda o, logical: _bands_problems(o) if o.get("to") == "age-band" else iter(()),
        needs_today=lambda o: o.get("to") == "age-band",
    ),
    _no_options(
        "postcode-district",
        "`LS6 2AB` -> `LS6` (anything not shaped like a postcode: null)",
        "Reduced to the postcode district (for example LS6): the rest of the postcode is never "
        "sent.",
        "reduced to postcode district",
        build=lambda o, ctx: _fn().postcode_district,
        rank=lambda o: 1,
    ),
    _no_options(
        "postcode-sector",
        "`LS6 2AB` -> `LS6 2` (anything not shaped like a postcode: null)",
        "Reduced to the postcode sector (for example LS6 2): the last two characters are never "
        "sent.",
        "reduced to postcode sector",
        build=lambda o, ctx: _fn().postcode_sector,
    ),
    TransformSpec(
        "truncate",
        "`{length: 3}`: the first N characters",
        lambda o, ctx: _fn().truncate(o.get("length", 0)),
        lambda o: f"Cut to its first {o.get('length')} characters.",
        lambda o: f"cut to {o.get('length')} characters",
        options=record(["length"], {"length": {"type": "integer", "minimum": 1}}),
        compare=_by_number("length", smaller_is_stronger=True),
        example={"length": 3},
    ),
    TransformSpec(
        "top-code",
        "`{max: 10}`: values above `max` become `max`",
        lambda o, ctx: _fn().top_code(o.get("max")),
        lambda o: f"Values above {o.get('max')} are sent as {o.get('max')}.",
        lambda o: f"top-coded at {o.get('max')}",
        options=record(["max"], {"max": {"type": "number"}}),
        outputs={"": None},
        reads_as=None,
        accepts=_NUMBERS,
        compare=_by_number("max", smaller_is_stronger=True),
        example={"max": 10},
        problems=_top_code_problems,
    ),
    TransformSpec(
        "band",
        "`{bands: [0,50,90]}`: `0-49`, `50-89`, `90+`",
        lambda o, ctx: _fn().band(o.get("bands") or ()),
        lambda o: f"Sent as a band ({', '.join(band_labels(o.get('bands')))}), not the value.",
        lambda o: f"banded {band_labels(o.get('bands'))}",
        options=record(["bands"], {"bands": _BANDS}),
        reads_as="number",
        compare=lambda o, n: _coarser(o.get("bands"), n.get("bands")),
        example={"bands": [0, 50, 90]},
        problems=lambda o, logical: _bands_problems(o),
    ),
    TransformSpec(
        "map",
        "`{map: {WBRI: White}, default: Other}`: the entry for each code; with no `default` an "
        "unknown code refuses the run (`unmapped-values`), counted, never shown",
        _map_build,
        _map_words,
        lambda o: "mapped through the contract's table",
        options=record(
            ["map"],
            {
                "map": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "string"},
                },
                "default": {"type": ["string", "null"]},
            },
        ),
        example={"map": {"A": "Group A"}, "default": "Other"},
    ),
    TransformSpec(
        "round",
        "`{decimals: 1}`: `3.14159` -> `3.1`; or `{multiple: 5}`: `17` -> `15` (half away from "
        "zero)",
        lambda o, ctx: _fn().round_(decimals=o.get("decimals"), multiple=o.get("multiple")),
        _round_words,
        lambda o: f"rounded ({', '.join(f'{k} {v}' for k, v in o.items())})",
        options={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "decimals": {"type": "integer", "minimum": 0, "maximum": 15},
                "multiple": {"type": "number", "exclusiveMinimum": 0},
            },
            "oneOf": [{"required": ["decimals"]}, {"required": ["multiple"]}],
        },
        outputs={"": None},
        reads_as=None,
        accepts=_NUMBERS,
        compare=_round_compare,
        example={"multiple": 5},
        problems=_round_problems,
    ),
)

TRANSFORMS: Final[dict[str, TransformSpec]] = {s.name: s for s in SPECS}


def strength_change(old: str, old_options: Options, new: str, new_options: Options) -> Direction:
    """+1 if the new transform discloses less, -1 more, 0 the same, None if it cannot tell."""
    before, after = TRANSFORMS.get(old), TRANSFORMS.get(new)
    if before is None or after is None:
        return None
    if old == new:
        return before.compare(old_options, new_options)
    if "keep" in (old, new):  # every transform is a function of the value: keep is the weakest
        return -1 if new == "keep" else 1
    a, b = before.rank(old_options), after.rank(new_options)
    return None if a is None or b is None else (b > a) - (b < a)


def option_problems(name: str, options: Options, logical: str) -> Problems:
    """What is wrong with a field's transform options beyond their shape: (path, message)."""
    spec = TRANSFORMS.get(name)
    if spec is None:
        return
    if spec.accepts is not None and logical not in spec.accepts:
        yield [], f"{name} needs a field of logicalType {' or '.join(spec.accepts)}"
    yield from spec.problems(options, logical)
