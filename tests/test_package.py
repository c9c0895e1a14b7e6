"""The package's shape: its public API, no Airflow in the core, safe parsing only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import exchange

CORE = Path(exchange.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_public_api_is_what_all_lists() -> None:
    for name in exchange.__all__:
        assert hasattr(exchange, name), name
    assert exchange.__all__ == sorted(exchange.__all__, key=lambda n: (n[0].islower(), n))


def test_core_library_never_imports_airflow() -> None:
    for path in CORE.rglob("*.py"):
        assert not any(m.split(".")[0] == "airflow" for m in imported_modules(path)), path


def test_no_unsafe_deserialisation_in_the_core() -> None:
    for path in CORE.rglob("*.py"):
        modules = imported_modules(path)
        assert not modules & {"pickle", "marshal", "shelve", "dill"}, path
        text = path.read_text()
        assert "yaml.load(" not in text and "yaml.unsafe_load" not in text, path


def test_importing_the_library_does_not_load_great_expectations() -> None:
    code = "import sys, exchange; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
