"""Importing cheaply: public names imported on first use (PEP 562), so that `import exchange`
and the commands that need no data library start fast; large imports with the garbage
collector paused; and pyarrow kept from importing pandas where nothing needs it."""

from __future__ import annotations

import gc
import importlib
import sys
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


class _Refused:
    """A meta path finder under which some packages and their submodules cannot be imported."""

    def __init__(self, roots: frozenset[str]) -> None:
        self.roots = roots

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.roots:
            raise ModuleNotFoundError(f"{name} is not imported here", name=name)


@contextmanager
def refused(packages: tuple[str, ...]) -> Iterator[None]:
    """Within the block, each package named (and its submodules) cannot be imported, as if it
    were not installed; one imported already is left alone. For a library that imports an
    optional package for a feature the gateway never uses."""
    finder = _Refused(frozenset(name for name in packages if name not in sys.modules))
    # New lists, not changes in place: another thread's import may be going through the list.
    sys.meta_path = [finder, *sys.meta_path]
    try:
        yield
    finally:
        sys.meta_path = [entry for entry in sys.meta_path if entry is not finder]


def arrow_without_pandas() -> None:
    """Have pyarrow take pandas as absent until it is asked for pandas itself.

    pyarrow imports pandas (about 30 MB and a tenth of a second) the first time it converts
    Python or numpy values, to check whether they are pandas objects. The gateway's process in
    `exchange run` converts such values but never hands pyarrow a pandas object: pandas is the
    validation worker's. So pyarrow's first look is made here with pandas unimportable, and it
    notes pandas as missing; anything that asks it for pandas later (`to_pandas`, when the
    windows are validated in this process after all) makes it import pandas then, as usual.
    Nothing if pandas is imported already; call it before other threads use pyarrow."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa  # before the refusal: nothing but pyarrow's look is made under it

    with refused(("pandas",)):
        pa.array([0])  # its first look for pandas


def arrow_sees_pandas() -> None:
    """Have pyarrow look for pandas again once it is imported (after `arrow_without_pandas`),
    so that pandas objects given to it convert as such (a Series' NaN as null, a Categorical
    as a dictionary) before anything has called `to_pandas`."""
    if "pandas" in sys.modules and "pyarrow" in sys.modules:
        import pyarrow as pa

        pa.table({}).to_pandas()  # asking pyarrow for pandas makes it look again
