"""Process-wide settings the command applies before the heavy libraries load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_mimalloc_returns_memory_promptly_unless_the_operator_said_otherwise() -> None:
    """The command asks mimalloc to give freed pages back at once (a lower peak per run);
    an operator's own setting is kept."""
    from exchange.settings import release_memory_promptly

    environ: dict[str, str] = {}
    release_memory_promptly(environ)
    assert environ == {"MIMALLOC_PURGE_DELAY": "0", "MIMALLOC_ALLOW_THP": "0"}
    chosen = {"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ALLOW_THP": "1"}
    release_memory_promptly(chosen)
    assert chosen == {"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ALLOW_THP": "1"}


def test_the_command_sets_it_before_pyarrow_loads(tmp_path: Path) -> None:
    """Read by mimalloc when pyarrow loads: the command must set it first."""
    script = (
        "import os, sys\n"
        "from exchange.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ.get('MIMALLOC_PURGE_DELAY'), 'pyarrow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 False"
