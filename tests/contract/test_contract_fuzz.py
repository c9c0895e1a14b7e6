"""Fuzz the contract loader: a mutated sample contract is loaded or refused, never a crash.

Each example takes the sample contract and applies a few mutations (a node replaced by a value
of another type, a key deleted, a list item duplicated), writes it as YAML and loads it as lint
does. The default budget is a few seconds; set EXCHANGE_FUZZ_EXAMPLES for a longer run, and
EXCHANGE_FUZZ_SWEEP=1 for a systematic sweep of every node. Every crash found became a named test
in test_contract_hostile.py (ODD_SHAPES).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.contract import load_contract, read_document
from exchange.errors import ContractError
from exchange.quality import compile_rules

SAMPLE_DOCUMENT = read_document(SAMPLE)
EXAMPLES = int(os.environ.get("EXCHANGE_FUZZ_EXAMPLES", "40"))

Path_ = tuple[str | int, ...]


class _NoAliases(yaml.SafeDumper):
    """Writes a value shared by two places twice, as an author would (aliases are refused)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _paths(value: Any, at: Path_ = ()) -> Iterator[Path_]:
    """Every node's path in a parsed document (the root excluded)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*at, key)
        yield from _paths(child, (*at, key))


ALL_PATHS = sorted(_paths(SAMPLE_DOCUMENT), key=repr)
# The sharing terms are checked by several layers after the ODCS schema: fuzz them most.
HOT_PATHS = [p for p in ALL_PATHS if {"customProperties", "quality", "slaProperties"} & set(p)]

# Odd values of every YAML type, including shapes that mean something elsewhere in a contract.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "..",
            "../x",
            "/etc",
            "9(2)(g)",
            "6(1)(e)",
            "2028-02-30",
            "sftp://",
            "sftp://[::1/x",
            "0 2 * * *",
            "keep",
            "pseudonymise",
            "band",
            "retention",
            "hostKeys",
            "transform",
            "ssh-ed25519 AAAA",
            "age1",
            "string",
            "integer",
            "rowCount",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["property", "value", "to", "bands", "x"]), inner, max_size=3
        ),
    ),
    max_leaves=6,
)


def _nearby(value: Any) -> list[Any]:
    """Values an author might plausibly write instead: same meaning, another shape."""
    out: list[Any] = [[value], str(value), {"value": value}]
    if isinstance(value, list) and value:
        out += [value[0], value[:1] * 2, [[v] for v in value]]
    if isinstance(value, dict):
        out += [list(value.values()), list(value.items()), {k: [v] for k, v in value.items()}]
    if isinstance(value, str):
        out += [value.split(), 1, True, value * 2, value + "/../x"]
    if isinstance(value, bool | int | float):
        out += [-1, 0, 2**64, 1.5, "1"]
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The sample contract with one to three mutations."""
    document = copy.deepcopy(SAMPLE_DOCUMENT)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.one_of(st.sampled_from(HOT_PATHS), st.sampled_from(ALL_PATHS)))
        parent: Any = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            last: Any = path[-1]
            parent[last]  # the path may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, dict | list):
            continue
        action = draw(st.sampled_from(["nearby", "nearby", "replace", "delete", "duplicate"]))
        if action == "nearby":
            parent[last] = copy.deepcopy(draw(st.sampled_from(_nearby(parent[last]))))
        elif action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        else:  # a duplicate key cannot exist in a dict: duplicate the item holding it instead
            parent[last] = [parent[last], copy.deepcopy(parent[last])]
    return document


def load_as_lint_does(path: Path) -> None:
    """Load and compile the quality rules, as `exchange contract lint` does."""
    compile_rules(load_contract(path))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="EXCHANGE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(document=mutated())
def test_a_mutated_contract_loads_or_raises_contract_error(
    document: dict[str, Any], tmp_path: Path
) -> None:
    """Any well-formed YAML document is either a contract or a ContractError: never a crash."""
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.dump(document, Dumper=_NoAliases, sort_keys=False))
    try:
        load_as_lint_does(path)
    except ContractError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == str(path)
            assert "\n" not in problem.message.strip()


@pytest.mark.skipif(
    "EXCHANGE_FUZZ_SWEEP" not in os.environ, reason="a 5-minute sweep: set EXCHANGE_FUZZ_SWEEP=1"
)
def test_every_node_of_the_sample_in_every_nearby_shape(tmp_path: Path) -> None:
    """Systematic: each node of the sample, in turn, takes each nearby shape or is deleted."""
    crashes = []
    path = tmp_path / "swept.yaml"
    for at in ALL_PATHS:
        parent: Any = SAMPLE_DOCUMENT
        for key in at[:-1]:
            parent = parent[key]
        last: Any = at[-1]
        shapes = [*_nearby(parent[last]), None, {}, [], "x", 7, [{}], "DELETE"]
        for shape in shapes:
            document = copy.deepcopy(SAMPLE_DOCUMENT)
            target: Any = document
            for key in at[:-1]:
                target = target[key]
            if shape == "DELETE":
                del target[last]
            else:
                target[last] = copy.deepcopy(shape)
            path.write_text(yaml.dump(document, Dumper=_NoAliases, sort_keys=False))
            try:
                load_as_lint_does(path)
            except ContractError:
                pass
            except Exception as exc:  # collecting every crash is the point
                crashes.append(f"{at} = {shape!r:.60}: {type(exc).__name__}: {exc}")
    assert crashes == []
