"""Large imports with the cyclic garbage collector paused, and what it leaves as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exchange.lazy import collector_paused


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
