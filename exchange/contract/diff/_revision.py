"""Read the two versions to compare: a file, or a file as a git revision holds it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from exchange.contract.load import parse_text, read_document
from exchange.errors import ContractError, Problem


def read_revision(spec: str, *, cwd: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Read a contract from a file path, or from git as `REV:path`; return (label, document).

    `REV:path` is resolved as `git show` does, in `cwd`: the path is from the repository's top
    (`REV:./path` for one relative to `cwd`). An existing file of that name is read instead.
    """
    base = cwd if cwd is not None else Path.cwd()
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    rev, colon, inner = spec.partition(":")
    if path.is_file() or not colon:
        return spec, read_document(path)
    if rev.startswith("-") or not inner:
        raise ContractError([Problem(spec, "", "not a file, and not a git revision REV:path")])
    try:
        result = subprocess.run(
            ["git", "--no-pager", "show", f"{rev}:{inner}"],
            cwd=base,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ContractError([Problem(spec, "", "git is not installed")]) from exc
    except subprocess.TimeoutExpired as exc:
        raise ContractError([Problem(spec, "", "git show timed out")]) from exc
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[0] if lines else f"exit status {result.returncode}"
        raise ContractError([Problem(spec, "", f"cannot read from git: {detail}")])
    try:
        text = result.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError([Problem(spec, "", "not UTF-8 text")]) from exc
    return spec, parse_text(text, spec)
