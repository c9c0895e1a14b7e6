"""Import Great Expectations without the heavy modules it loads for rules the gateway never
compiles; import this module before any `great_expectations` import.

Importing `great_expectations` loads every expectation it ships, and one of them (the KL
divergence expectation) imports `scipy.stats` and `altair` at module level: about 1.7 s of
CPU of the 5 s the import costs, in every run and every Airflow task. While GX is imported
here, each of them is a stand-in in `sys.modules`; afterwards the stand-ins are taken out
again, so they live on only where GX bound them. A stand-in imports the real module (a plain
import, as GX's own would have been) the first time any attribute is asked of it, so that
expectation still works, only later. Everything else in the process imports these modules
as usual; a module already imported is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# GX reads it at its first import; usage analytics would otherwise be on in builds that ship them.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DEFERRED = ("scipy.stats", "altair")


class _OnFirstUse(types.ModuleType):
    """A module that imports the real one on the first attribute it does not have itself."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        # Read by the import system while the stand-in is in sys.modules; no `__path__`, so an
        # import of a submodule meanwhile asks for it, and the stand-in steps aside for the
        # real package (as on any first use while GX is being imported).
        self.__spec__ = spec
        self.__origin = spec.origin
        self.__real: types.ModuleType | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def _load(self) -> types.ModuleType:
        if self.__real is None:
            name = self.__name__
            if sys.modules.get(name) is self:  # used while GX is still being imported
                sys.modules.pop(name, None)
                _set_on_parent(name, None, only_if=self)
            if name not in sys.modules:  # else imported (or being imported) by someone else
                # What a plain import would find now must be what GX would have imported: a
                # module planted earlier on a sys.path that grew since is refused, not run.
                found = importlib.util.find_spec(name)
                if found is None or found.origin != self.__origin:
                    raise ImportError(
                        f"{name} is no longer the module found when Great Expectations was "
                        "imported (sys.path changed): refusing to load it"
                    )
            # The import system's own locks: waits for another thread's import to finish.
            self.__real = importlib.import_module(name)
        return self.__real


@contextmanager
def deferred(names: tuple[str, ...] = DEFERRED) -> Iterator[None]:
    """Within the block, each module named that is not imported yet is a stand-in."""
    placed: dict[str, _OnFirstUse] = {}
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)  # imports the parent package, not the module
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue  # not installed: GX's own import will say so if it needs it
        placed[name] = sys.modules[name] = _OnFirstUse(spec)
        _set_on_parent(name, placed[name])
    try:
        yield
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            _set_on_parent(name, None, only_if=stand_in)


def _set_on_parent(name: str, module: Any, only_if: Any = None) -> None:
    """`from scipy import stats` reads the parent package's attribute: point it at `module`,
    or remove it (None) if it is still `only_if`."""
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is None:
        return
    if module is not None:
        setattr(parent, child, module)
    elif getattr(parent, child, None) is only_if:
        delattr(parent, child)


with deferred():
    import great_expectations  # noqa: F401
