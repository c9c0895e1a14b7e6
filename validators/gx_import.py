"""Prepare this process for importing Great Expectations: opt out of analytics, defer the
heavy modules it imports for rules the gateway never compiles.

Importing `great_expectations` loads every expectation it ships, and one of them (the KL
divergence expectation) imports `scipy.stats` and `altair` at module level: about 1.7 s of
CPU of the 5 s the import costs, in every run and every Airflow task. Each of them is put in
`sys.modules` as a stand-in module that imports the real one the first time any attribute is
asked of it, so an expectation that does use them still works, only later. A module already
imported is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

# GX reads it at its first import; usage analytics would otherwise be on in builds that ship them.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DEFERRED = ("scipy.stats", "altair")


class _OnFirstUse(types.ModuleType):
    """A module that imports the real one on the first attribute it does not have itself."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        # Set from the spec (found without running the module) so the import system and
        # `inspect` read them without loading it.
        self.__spec__ = spec
        self.__file__ = spec.origin
        if spec.submodule_search_locations is not None:
            self.__path__ = list(spec.submodule_search_locations)
        self.__real: types.ModuleType | None = None
        # Re-entrant: the real module's own import may reach this stand-in again (through
        # `scipy.stats` on its parent) before it has finished.
        self.__lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def _load(self) -> types.ModuleType:
        with self.__lock:
            if self.__real is None:
                name = self.__name__
                if sys.modules.get(name) is self:
                    del sys.modules[name]  # so the import below runs the real module
                parent, _, child = name.rpartition(".")
                if parent and getattr(sys.modules.get(parent), child, None) is self:
                    delattr(sys.modules[parent], child)  # the import sets the real one there
                self.__real = importlib.import_module(name)
            return self.__real


def defer_heavy_imports(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a stand-in in `sys.modules` for each module named that is not imported yet."""
    for name in names:
        if name in sys.modules:
            continue
        parent, _, child = name.rpartition(".")
        try:
            spec = importlib.util.find_spec(name)  # imports the parent package, not the module
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue  # not installed: GE's own import will say so if it needs it
        stand_in = _OnFirstUse(spec)
        sys.modules[name] = stand_in
        if parent:
            setattr(sys.modules[parent], child, stand_in)  # `from scipy import stats` finds it


defer_heavy_imports()
