"""Importing cheaply: public names imported on first use (PEP 562), so that `import exchange`
and the commands that need no data library start fast; and large imports with the garbage
collector paused."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any


def lazy_names(
    package: str, lazy: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's `__getattr__` and `__dir__` for names (name -> module) loaded on first use."""

    def get(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def names() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return get, names


@contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """Within the block, Python's cyclic garbage collector does not run; for large imports.

    An import builds thousands of objects that live as long as the process (classes, functions,
    module namespaces), and each automatic collection while they are built walks them again:
    a sixth of the CPU of importing Great Expectations, a tenth of a run's own imports
    (BENCHMARKS.md, tenth round). With `freeze`, what exists when the block ends is moved out
    of later collections' reach (`gc.freeze`): for a process that holds its imports to the end,
    never in one that goes on to run other work, such as a test session."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()
