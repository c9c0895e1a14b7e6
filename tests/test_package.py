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


HEAVY = ("pyarrow", "pandas", "sqlalchemy", "paramiko", "great_expectations", "cryptography")


def test_importing_the_package_and_the_command_loads_no_heavy_library() -> None:
    """`import exchange`, `import exchange.cli` and `exchange --help` stay fast (PEP 562)."""
    code = (
        "import sys, contextlib, io, exchange, exchange.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    exchange.cli.main(['--help'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_exits_with_mains_code_and_skips_only_the_last_collection(
    tmp_path: Path,
) -> None:
    """The console command (`python -m exchange` too) returns main's exit code, its exit
    handlers still run, and by then every live object is frozen out of the final collection."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: DataContract\n")
    code = (
        "import atexit, gc, runpy, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        f"sys.argv = ['exchange', 'contract', 'lint', {str(bad)!r}]\n"
        "runpy.run_module('exchange', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr  # a bad contract: bad input
    assert "frozen True" in done.stdout
    assert "bad.yaml: apiVersion" in done.stderr


def test_every_exchange_variable_is_read_by_settings_alone() -> None:
    """Only exchange/settings.py reads the environment, with two named exceptions."""
    allowed = {
        CORE / "settings.py",
        CORE / "cli" / "_common.py",  # --passphrase-env VAR: a variable the user names
        CORE / "sources" / "postgres.py",  # libpq's own PGHOST/PGHOSTADDR, not ours
    }
    readers = {
        path
        for path in CORE.rglob("*.py")
        if any(word in path.read_text() for word in ("os.environ", "getenv", "environ["))
    }
    assert readers <= allowed, sorted(str(p.relative_to(CORE)) for p in readers - allowed)


def test_the_error_tree_drawn_in_errors_py_is_the_real_one() -> None:
    """Every error class is drawn, under its parent, with the exit code it carries beside it."""
    from exchange import errors

    parents: list[type] = []
    drawn: set[str] = set()
    for line in (errors.__doc__ or "").splitlines():
        text = line.lstrip(" │├└─")
        name, *rest = text.split() or [""]
        if not isinstance(getattr(errors, name, None), type):  # prose, not a drawn class
            continue
        cls = getattr(errors, name)
        del parents[(len(line) - len(text)) // 4 - 1 :]
        assert not parents or parents[-1] in cls.__bases__, name
        parents.append(cls)
        drawn.add(name)
        if rest and rest[-1].isdigit():
            assert cls.exit_code == int(rest[-1]), name
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.ExchangeError)
    }
    assert drawn == defined


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


def test_audit_package_imports_only_downwards_so_it_has_no_cycle() -> None:
    # The layers of exchange/audit, lowest first (its __init__ explains them). A module may
    # import only from a lower layer: no upward or sideways import, hence no import cycle.
    layers = {
        **dict.fromkeys(("events", "merkle", "checkpoint", "subjects"), 0),
        "entry": 1,
        **dict.fromkeys(("storage", "chain", "anchor", "proofs", "bindings"), 2),
        **dict.fromkeys(("verify", "export"), 3),
        "signer": 4,
        "ledger": 5,
        **dict.fromkeys(("disclosures", "witness", "bundle"), 6),
        "__init__": 7,
    }
    folder = CORE / "audit"
    modules = {p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.py")}
    assert modules == set(layers), f"give each audit module a layer: {modules ^ set(layers)}"

    def targets(node: ast.AST) -> list[str]:
        """The audit modules an import statement reaches ("__init__" for the package)."""
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "exchange.audit" if node.level else (node.module or "")
            base = f"{base}.{node.module}" if node.level and node.module else base
            names = [f"{base}.{a.name}" if base == "exchange.audit" else base for a in node.names]
        else:
            return []
        parts = [n.split(".") for n in names if n.split(".")[:2] == ["exchange", "audit"]]
        return [p[2] if len(p) > 2 and p[2] in layers else "__init__" for p in parts]

    upward = {
        f"{name} (layer {layer}) imports {target} (layer {layers[target]})"
        for name, layer in layers.items()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text()))
        for target in targets(node)
        if layers[target] >= layer
    }
    assert not upward, sorted(upward)
