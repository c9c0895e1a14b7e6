"""Large imports with the cyclic garbage collector paused, and what it leaves as it was; pyarrow
kept from importing pandas until something asks it for pandas."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from exchange.lazy import collector_paused, refused


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as the session had it afterwards, whatever a test did to it."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_paused_within_the_block_and_enabled_again(collector: None) -> None:
    gc.enable()
    frozen = gc.get_freeze_count()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # nothing is frozen unless asked


def test_a_collector_already_off_stays_off(collector: None) -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_enabled_again_when_the_block_raises(collector: None) -> None:
    gc.enable()
    with pytest.raises(ImportError), collector_paused():
        raise ImportError("no such module")
    assert gc.isenabled()


def test_freeze_moves_what_the_block_built_out_of_later_collections(collector: None) -> None:
    gc.enable()
    frozen = gc.get_freeze_count()
    with collector_paused(freeze=True):
        built = [[] for _ in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(built)


def test_a_refused_package_cannot_be_imported_until_the_block_ends() -> None:
    for name in ("wave", "xmlrpc", "xmlrpc.client"):
        sys.modules.pop(name, None)
    with refused(("wave", "xmlrpc", "json")):
        with pytest.raises(ModuleNotFoundError):
            import wave
        with pytest.raises(ModuleNotFoundError):
            import xmlrpc.client  # noqa: F401 - a submodule too
        import json.decoder  # imported already: left alone

        assert json.decoder.JSONDecodeError
    assert not any(type(finder).__name__ == "_Refused" for finder in sys.meta_path)
    import wave

    assert wave.open


# Run in a fresh interpreter: this session has pandas loaded already.
WITHOUT_PANDAS = """
import sys
import numpy as np
from exchange.lazy import arrow_without_pandas
arrow_without_pandas()
import pyarrow as pa
import pyarrow.compute as pc
from exchange.crypto.keyed import KeyedHash
assert pa.array(["a", None]).type == pa.string()
assert pa.array(np.arange(3)).type == pa.int64()
assert pa.scalar(b"x", pa.binary()).as_py() == b"x"
assert KeyedHash(b"k" * 32).macs(pa.array([b"v%d" % i for i in range(5000)])).nbytes == 160000
assert pc.sum(pa.array([1, 2])).as_py() == 3
print("pandas" in sys.modules)
import pandas as pd
from exchange.lazy import arrow_sees_pandas
arrow_sees_pandas()
assert pa.array(pd.Series([1.5, None])).null_count == 1
assert pa.types.is_dictionary(pa.array(pd.Categorical(["x", "y", "x"])).type)
frame = pa.table({"a": [1, 2], "b": ["x", None]}).to_pandas()
assert frame["a"].tolist() == [1, 2]
print("pandas" in sys.modules, sys.meta_path[0].__class__.__name__)
"""


def test_pyarrow_imports_pandas_only_when_asked_for_it() -> None:
    """Converting values (lists, numpy, scalars, DataFusion's hashing) leaves pandas out; once
    pandas is imported, `arrow_sees_pandas` (or any `to_pandas`) has pyarrow convert pandas
    objects as such again; no import hook is left behind."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PANDAS], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["False", "True"]
    assert done.stdout.split()[2] != "_Refused"
