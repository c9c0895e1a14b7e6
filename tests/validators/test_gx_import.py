"""The modules Great Expectations imports for rules we never compile are loaded only on use."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration  # each case needs a fresh interpreter


def _fresh(code: str) -> dict[str, object]:
    """Run code in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_STATE = """
    import json, sys
    def deferred(name):
        return type(sys.modules.get(name)).__name__ == "_OnFirstUse"
"""


def test_validating_every_rule_kind_never_loads_scipy_stats_or_altair() -> None:
    seen = _fresh(
        _STATE
        + """
    import pandas as pd
    from validators.rules import Rule
    from validators.suite import BatchValidator

    frame = pd.DataFrame(
        {"n": [1, 2, 3], "s": ["a", "b", None], "k": ["x", "y", "z"], "nhs": ["1", "2", "3"]}
    )
    rules = [
        Rule("not_null", "s"),
        Rule("between", "n", (("min", 0), ("max", 2))),
        Rule("in_set", "k", (("values", ("x", "y", "z")),)),
        Rule("regex", "k", (("pattern", "^[xy]$"),)),
        Rule("unique", "k"),
        Rule("nhs_number", "nhs"),
        Rule.compound_unique(("n", "k")),
    ]
    failures = BatchValidator("gx-import", rules).validate(frame)
    print(json.dumps({
        "stats": deferred("scipy.stats"),
        "altair": deferred("altair"),
        "failed": sorted(f.rule.kind for f in failures),
    }))
    """
    )
    assert seen["stats"] is True and seen["altair"] is True
    # The rules still ran: these four fail on this frame; in_set and both unique rules pass.
    assert seen["failed"] == ["between", "nhs_number", "not_null", "regex"]


def test_an_expectation_that_uses_scipy_still_works_and_loads_it_then() -> None:
    seen = _fresh(
        _STATE
        + """
    import validators.suite  # the deferral is in place before GX is imported
    import great_expectations as gx
    import pandas as pd
    before = deferred("scipy.stats")

    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("p").add_dataframe_asset("a")
        .add_batch_definition_whole_dataframe("b")
        .get_batch(batch_parameters={"dataframe": pd.DataFrame({"c": ["a", "a", "b"]})})
    )
    partition = {"values": ["a", "b"], "weights": [0.5, 0.5]}
    result = batch.validate(
        gx.expectations.ExpectColumnKLDivergenceToBeLessThan(
            column="c", partition_object=partition, threshold=0.5
        )
    )
    from scipy import stats
    from scipy.stats import entropy
    print(json.dumps({
        "before": before,
        "after": deferred("scipy.stats"),
        "success": result.success,
        "observed": result.result.get("observed_value"),
        "same": stats.entropy is entropy,
        "real": type(sys.modules["scipy.stats"]).__name__,
    }))
    """
    )
    assert seen["before"] is True
    assert seen["after"] is False and seen["real"] == "module"
    assert seen["success"] is True and seen["same"] is True
    # KL(2/3, 1/3 || 1/2, 1/2) in nats, computed by scipy once it was really loaded.
    assert seen["observed"] == pytest.approx(0.0566, abs=1e-3)


def test_a_module_imported_before_is_left_as_it_is() -> None:
    seen = _fresh(
        _STATE
        + """
    import scipy.stats
    real = sys.modules["scipy.stats"]
    import validators.gx_import
    print(json.dumps({
        "kept": sys.modules["scipy.stats"] is real,
        "altair": deferred("altair"),
    }))
    """
    )
    assert seen == {"kept": True, "altair": True}
