"""Per-field minimisation transforms: Arrow array in, Arrow array out, vectorised.

What each transform takes, reads, produces and means is declared once, in the registry
`exchange.contract.vocabulary.transforms`; this module holds the functions it builds. Dropping a
field is not a transform: a contract lists only the fields it sends.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.crypto.keyed import KeyedHash, sha256_digests
from exchange.errors import Refused
from exchange.types import arrow_type

MIN_KEY_BYTES = 32


def key_id(key: bytes) -> str:
    """A fingerprint of a pseudonymisation key (16 hex), safe to publish: it reveals nothing."""
    return hmac.digest(key, b"exchange pseudonymisation key id", "sha256")[:8].hex()


SCOPE_LABEL = b"exchange pseudonym scope\n"


def agreement_key(key: bytes, contract_id: str) -> bytes:
    """The per-agreement pseudonymisation key: HMAC-SHA256(key, label + the contract's id)."""
    return hmac.digest(key, SCOPE_LABEL + contract_id.encode("utf-8"), "sha256")


def scoped_key(key: bytes, contract_id: str, scope: str | None) -> bytes:
    """The key a contract's pseudonyms are made with: its own under `pseudonymScope: agreement`;
    the key itself when `shared` or not stated (as before the term, keeping old pseudonyms)."""
    return agreement_key(key, contract_id) if scope == "agreement" else key


PSEUDONYM_HEX_CHARS = 32  # 128 bits: collision-free in practice at any realistic scale

_CHUNK_ROWS = 1 << 20  # keeps the hex output's 32-bit offsets far from overflowing
# A UK postcode once upper-cased and without spaces (and GIR 0AA, the one exception).
_POSTCODE = r"^(?:[A-Z]{1,2}[0-9][0-9A-Z]?[0-9][A-Z]{2}|GIR0AA)$"

Transform = Callable[[pa.Array], pa.Array]


class UnmappedValues(Refused):
    """A `map` transform met source codes its map does not list, and it has no default."""

    reason = "unmapped-values"

    def __init__(self, count: int, field: str | None = None) -> None:
        self.count = count
        self.field = field
        where = f"field {field}: " if field else ""
        super().__init__(
            f"{where}{count} value(s) have no entry in the contract's map and there is no default"
        )


def __getattr__(name: str) -> Any:
    """KINDS: the transform names, from the registry (read late: it imports this module's users)."""
    if name == "KINDS":
        return tuple(_registry())
    raise AttributeError(name)


def _registry() -> Mapping[str, Any]:
    from exchange.contract.vocabulary.transforms import TRANSFORMS

    return TRANSFORMS


def reads_as(kind: str, logical_type: str) -> str:
    """The logical type a transform reads its source column as."""
    spec = _registry().get(kind)
    return spec.reads_as or logical_type if spec else logical_type


def source_type(kind: str, logical_type: str) -> pa.DataType:
    """The Arrow type a transform reads its source column as."""
    return arrow_type(reads_as(kind, logical_type))


def needs_today(kind: str, options: Mapping[str, Any]) -> bool:
    """Whether the transform depends on the run date."""
    spec = _registry().get(kind)
    return bool(spec and spec.needs_today(options))


def keep() -> Transform:
    """Send the value as it is."""
    return lambda values: values


def _as_binary(values: pa.Array) -> pa.Array:
    """The UTF-8 bytes of a text column, nulls as empty (they are masked again afterwards)."""
    target = pa.large_binary() if pa.types.is_large_string(values.type) else pa.binary()
    return pc.cast(pc.fill_null(values, ""), target)


# Each byte's two lowercase hex digits, as the little-endian 16-bit word they form in memory.
_HEX_PAIRS = np.array([int.from_bytes(b"%02x" % byte, "little") for byte in range(256)], "<u2")


def _hex_column(digests: np.ndarray) -> pa.Array:
    """One string of hex characters per row of an (n, width) uint8 array, written by one
    lookup straight into Arrow's memory (as `bytes.hex`, with no Python-side copy to free)."""
    count, width = digests.shape
    text = pa.allocate_buffer(2 * width * count)
    digits = np.frombuffer(text, dtype="<u2").reshape(count, width)
    np.take(_HEX_PAIRS, digests, out=digits, mode="clip")  # every uint8 is an index: no clipping
    chars = 2 * width
    offsets = np.arange(0, chars * (count + 1), chars, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), text)


def _per_value(values: pa.Array, digest: Callable[[pa.Array], np.ndarray]) -> pa.Array:
    """Apply a digest function (binary array in, an (n, width) uint8 array of digests out) over
    a text column, keeping nulls null."""
    data = _as_binary(values)
    parts = []
    for start in range(0, max(len(data), 1), _CHUNK_ROWS):
        parts.append(_hex_column(digest(data.slice(start, _CHUNK_ROWS))))
    out = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
    if values.null_count:
        out = pc.if_else(pc.is_valid(values), out, pa.scalar(None, pa.string()))
    return out


def pseudonymise(key: bytes) -> Transform:
    """Keyed HMAC-SHA256 of the value: stable across runs, not reversible without the key."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a pseudonymisation key needs at least {MIN_KEY_BYTES} bytes")
    # The same HMAC-SHA256, a column at a time off the GIL when large (exchange.crypto.keyed).
    digests = KeyedHash(key, PSEUDONYM_HEX_CHARS // 2).macs
    return lambda values: _per_value(values, digests)


def pseudonymise_with(key: bytes | None) -> Transform:
    """Pseudonymise with the agreement's key; ValueError when there is none."""
    if key is None:
        raise ValueError("pseudonymise needs the agreement's key")
    return pseudonymise(key)


def hash_() -> Transform:
    """Unkeyed SHA-256 of the value, 64 hex characters. Not a pseudonym: anyone can recompute it."""
    return lambda values: _per_value(values, sha256_digests)


def years_before(day: dt.date, years: int) -> dt.date:
    """The latest birth date of someone `years` old on `day` (29 Feb birthdays count from 1 Mar)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # `day` is 29 February and the year `years` before is not a leap year
        return day.replace(year=day.year - years, day=28)


def age_at_least(column: Any, years: int, today: dt.date) -> Any:
    """Array or expression: whether a birth date makes someone at least `years` old `today`."""
    return pc.less_equal(column, pa.scalar(years_before(today, years), pa.date32()))


def _banded(conditions: list[pa.Array], bounds: Sequence[int]) -> pa.Array:
    """The band label of each row, from one 'at or above bound i' condition per bound."""
    # A row's band index is how many lower bounds it reaches; 0 (below every band) is null.
    index = pc.cast(conditions[0], pa.int8())
    for condition in conditions[1:]:
        index = pc.add(index, pc.cast(condition, pa.int8()))
    from exchange.contract.vocabulary.transforms import band_labels

    labels = pa.array([None, *band_labels(list(bounds))], type=pa.string())
    return pc.take(labels, index)


def band(bounds: Sequence[int]) -> Transform:
    """Put a number in a band: bounds [0, 50, 90] give "0-49", "50-89" and "90+"."""
    _check_bounds(bounds)
    return lambda values: _banded(
        [pc.greater_equal(values, pa.scalar(float(b))) for b in bounds], bounds
    )


def age_band(bounds: Sequence[int], today: dt.date) -> Transform:
    """Age in whole years at `today`, banded: bounds [0, 5, 11] give "0-4", "5-10" and "11+"."""
    _check_bounds(bounds)
    return lambda values: _banded([age_at_least(values, b, today) for b in bounds], bounds)


def _check_bounds(bounds: Sequence[int]) -> None:
    from exchange.contract.vocabulary.transforms import bounds_problem

    problem = bounds_problem(bounds)
    if problem:
        raise ValueError(problem)


def generalise_date(
    to: str, *, bands: Sequence[int] = (), today: dt.date | None = None
) -> Transform:
    """Reduce a date to its year (integer), year and month ("YYYY-MM"), or age band at `today`."""
    if to == "year":
        return lambda values: pc.year(values)
    if to == "year-month":
        return _year_month
    if to == "age-band":
        if today is None:
            raise ValueError("generalise-date to age-band needs the run date")
        return age_band(bands, today)
    raise ValueError(f"generalise-date cannot reduce to {to!r}")


def _year_month(values: pa.Array) -> pa.Array:
    """ "YYYY-MM" of each date (joined from its parts: seven times faster than strftime)."""
    year = pc.utf8_lpad(pc.cast(pc.year(values), pa.string()), 4, "0")
    month = pc.utf8_lpad(pc.cast(pc.month(values), pa.string()), 2, "0")
    return pc.binary_join_element_wise(year, month, "-")


def _compact_postcode(values: pa.Array) -> pa.Array:
    """Upper case, spaces removed; null where the result is not shaped like a UK postcode."""
    compact = pc.replace_substring(pc.utf8_upper(values), " ", "")
    # Anything else (free text, a partial postcode) is not passed on in part.
    return pc.if_else(
        pc.match_substring_regex(compact, _POSTCODE), compact, pa.scalar(None, pa.string())
    )


def postcode_district(values: pa.Array) -> pa.Array:
    """The outward code of a UK postcode ("LS6 2AB" -> "LS6"); null if not a postcode."""
    # The inward code is always three characters, so the rest is the district.
    return pc.utf8_slice_codeunits(_compact_postcode(values), 0, -3)


def postcode_sector(values: pa.Array) -> pa.Array:
    """The sector of a UK postcode ("LS6 2AB" -> "LS6 2"); null if not a postcode."""
    compact = _compact_postcode(values)
    return pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(compact, 0, -3), pc.utf8_slice_codeunits(compact, -3, -2), " "
    )


def truncate(length: int) -> Transform:
    """The first `length` characters (Unicode code points) of the text."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError("truncate needs a length of at least 1")
    return lambda values: pc.utf8_slice_codeunits(values, 0, length)


def top_code(maximum: Any) -> Transform:
    """Values above `maximum` become `maximum`; others, nulls and NaN are unchanged."""
    if isinstance(maximum, bool) or not isinstance(maximum, int | float):
        raise ValueError("top-code needs a number as max")

    def apply(values: pa.Array) -> pa.Array:
        cap = pa.scalar(maximum).cast(values.type)
        return pc.if_else(pc.greater(values, cap), cap, values)

    return apply


def lookup(
    table: Mapping[str, str], *, default: str | None = None, strict: bool = True
) -> Transform:
    """Replace each code by its entry in `table`; unknown codes become `default`.

    With `strict`, an unknown code raises UnmappedValues instead (no row value in the message).
    """
    keys = pa.array(list(table), type=pa.string())
    labels = pa.array(list(table.values()), type=pa.string())

    def apply(values: pa.Array) -> pa.Array:
        out = pc.take(labels, pc.index_in(values, value_set=keys))
        unknown = pc.and_(pc.is_valid(values), pc.is_null(out))
        count = pc.sum(unknown).as_py() or 0
        if not count:
            return out
        if strict:
            raise UnmappedValues(count)
        return pc.if_else(unknown, pa.scalar(default, pa.string()), out)

    return apply


def round_(*, decimals: int | None = None, multiple: float | None = None) -> Transform:
    """Round to `decimals` places, or to the nearest `multiple`; halves go away from zero."""
    if (decimals is None) == (multiple is None):
        raise ValueError("round needs either decimals or multiple")
    if multiple is not None and (
        isinstance(multiple, bool) or not isinstance(multiple, int | float) or multiple <= 0
    ):
        raise ValueError("round needs a positive multiple")
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, int)):
        raise ValueError("round needs a whole number of decimals")

    def apply(values: pa.Array) -> pa.Array:
        if multiple is not None:
            out = pc.round_to_multiple(
                values, multiple=multiple, round_mode="half_towards_infinity"
            )
        else:
            out = pc.round(values, ndigits=decimals, round_mode="half_towards_infinity")
        return out if out.type == values.type else pc.cast(out, values.type)

    return apply


def option_problems(
    kind: str, options: Mapping[str, Any], logical_type: str
) -> Iterator[tuple[list[str | int], str]]:
    """What is wrong with a field's transform options beyond their shape: (path, message)."""
    from exchange.contract.vocabulary.transforms import option_problems as problems

    return problems(kind, options, logical_type)


def build(
    kind: str, options: Mapping[str, Any], *, key: bytes | None, today: dt.date | None = None
) -> Transform:
    """The transform a contract field names, ready to apply; ValueError if it cannot be built."""
    from exchange.contract.vocabulary.transforms import BuildContext

    spec = _registry().get(kind)
    if spec is None:
        raise ValueError(f"unknown transform {kind!r}")
    function: Transform = spec.build(options, BuildContext(key=key, today=today))
    return function
