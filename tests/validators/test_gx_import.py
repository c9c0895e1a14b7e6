"""The modules Great Expectations imports for rules we never compile are loaded only on use,
and nothing else in the process sees a difference."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # each case needs a fresh interpreter


def _fresh(code: str) -> dict[str, object]:
    """Run code in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", _STATE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_STATE = """
import json, sys

def gx_binding():
    # The one GX module that imports them: what it holds is a stand-in until first use.
    from great_expectations.expectations.core import (
        expect_column_kl_divergence_to_be_less_than as kl,
    )
    return kl

def deferred():
    kl = gx_binding()
    return [type(kl.stats).__name__, type(kl.alt).__name__]
"""


def test_validating_every_rule_kind_never_loads_scipy_stats_or_altair() -> None:
    seen = _fresh(
        """
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
            "imported": [m for m in ("scipy.stats", "altair") if m in sys.modules],
            "in_gx": deferred(),
            "failed": sorted(f.rule.kind for f in failures),
        }))
        """
    )
    assert seen["imported"] == []
    assert seen["in_gx"] == ["_OnFirstUse", "_OnFirstUse"]
    # The rules still ran: these four fail on this frame; in_set and both unique rules pass.
    assert seen["failed"] == ["between", "nhs_number", "not_null", "regex"]


def test_an_expectation_that_uses_scipy_still_works_and_loads_it_then() -> None:
    seen = _fresh(
        """
        import validators.suite  # GX imported the cheap way
        import great_expectations as gx
        import pandas as pd

        before = "scipy.stats" in sys.modules
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
        from scipy.stats import entropy
        print(json.dumps({
            "before": before,
            "after": type(sys.modules["scipy.stats"]).__name__,
            "success": result.success,
            "observed": result.result.get("observed_value"),
            "same": gx_binding().stats.entropy is entropy,
        }))
        """
    )
    assert seen["before"] is False and seen["after"] == "module"
    assert seen["success"] is True and seen["same"] is True
    # KL(2/3, 1/3 || 1/2, 1/2) in nats, computed by scipy once it was really loaded.
    assert seen["observed"] == pytest.approx(0.0566, abs=1e-3)


def test_other_code_imports_scipy_stats_and_its_submodules_as_usual() -> None:
    seen = _fresh(
        """
        import validators.suite
        from scipy.stats.distributions import norm
        import scipy.stats.contingency
        from scipy import stats
        print(json.dumps({
            "cdf": float(norm.cdf(0)),
            "real": type(stats).__name__,
            "one": stats is sys.modules["scipy.stats"] and stats.norm is norm,
            "gx_sees_it": gx_binding().stats.norm is norm,
        }))
        """
    )
    assert seen == {"cdf": 0.5, "real": "module", "one": True, "gx_sees_it": True}


def test_first_use_from_many_threads_with_submodule_imports_beside_it() -> None:
    seen = _fresh(
        """
        import threading
        import validators.suite

        errors, got = [], []
        def use():
            try:
                got.append(gx_binding().stats.entropy)
            except BaseException as exc:
                errors.append(repr(exc))
        def direct():
            try:
                from scipy.stats.distributions import norm
                got.append(norm.cdf)
            except BaseException as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=use if i % 2 else direct) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        import scipy.stats
        print(json.dumps({
            "errors": errors,
            "count": len(got),
            "alive": sum(t.is_alive() for t in threads),
            "one": gx_binding().stats.entropy is scipy.stats.entropy,
        }))
        """
    )
    assert seen == {"errors": [], "count": 8, "alive": 0, "one": True}


def test_a_module_planted_on_a_later_sys_path_is_refused_not_run(tmp_path: Path) -> None:
    (tmp_path / "altair.py").write_text("print('PLANTED'); Chart = None\n")
    seen = _fresh(
        f"""
        import validators.suite
        sys.path.insert(0, {str(tmp_path)!r})
        try:
            gx_binding().alt.Chart
            outcome = "loaded"
        except ImportError as exc:
            outcome = str(exc)
        print(json.dumps({{"outcome": outcome, "imported": "altair" in sys.modules}}))
        """
    )
    assert "refusing to load it" in str(seen["outcome"])
    assert seen["imported"] is False


def test_a_module_imported_before_is_left_as_it_is() -> None:
    seen = _fresh(
        """
        import scipy.stats
        real = sys.modules["scipy.stats"]
        import validators.gx_import
        print(json.dumps({
            "kept": sys.modules["scipy.stats"] is real and gx_binding().stats is real,
            "altair": deferred()[1],
        }))
        """
    )
    assert seen == {"kept": True, "altair": "_OnFirstUse"}


def test_a_stand_in_used_while_gx_is_still_being_imported_steps_aside_for_the_real_module() -> None:
    seen = _fresh(
        """
        from validators.gx_import import deferred

        # Standard-library modules not imported at start-up stand in for scipy.stats and altair.
        with deferred(("wave", "xmlrpc.client")):
            import wave
            import xmlrpc.client as client
            stand_ins = [type(wave).__name__, type(client).__name__]
            opened = wave.open  # first use inside the window
            from xmlrpc.client import ServerProxy  # the submodule's name, inside the window
        import wave as after
        print(json.dumps({
            "stand_ins": stand_ins,
            "real": type(sys.modules["wave"]).__name__,
            "same": opened is after.open,
            "proxy": ServerProxy is sys.modules["xmlrpc.client"].ServerProxy,
            "parent": sys.modules["xmlrpc"].client is sys.modules["xmlrpc.client"],
        }))
        """
    )
    assert seen == {
        "stand_ins": ["_OnFirstUse", "_OnFirstUse"],
        "real": "module",
        "same": True,
        "proxy": True,
        "parent": True,
    }
