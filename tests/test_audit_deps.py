"""`make audit-deps` reporting (scripts/audit_deps.py), with a stand-in pip-audit.

The real database is often unreachable here, so the three outcomes are driven by a fake
pip-audit that writes the JSON report pip-audit 2.10 writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "audit_deps.py"


def fake_pip_audit(tmp_path: Path, report: dict | None) -> Path:
    """An executable that writes `report` where --output says (or fails like a network error)."""
    body = (
        f"import json, sys\nout = sys.argv[sys.argv.index('--output') + 1]\n"
        f"json.dump({report!r}, open(out, 'w'))\n"
        if report is not None
        else "import sys\nsys.exit('ConnectionError: Max retries exceeded (pypi.org)')\n"
    )
    path = tmp_path / "pip-audit"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("report", "code", "said"),
    [
        ({"dependencies": [{"name": "a", "version": "1", "vulns": []}]}, 0, "1 of 1 packages"),
        (
            {
                "dependencies": [
                    {
                        "name": "pip",
                        "version": "23.2.1",
                        "vulns": [{"id": "GHSA-mq26-g339-26xf", "fix_versions": ["23.3"]}],
                    }
                ]
            },
            1,
            "VULNERABLE pip 23.2.1: GHSA-mq26-g339-26xf (fixed in 23.3)",
        ),
        (
            {"dependencies": [{"name": "six", "skip_reason": "Dependency not found on PyPI"}]},
            2,
            "NOT audited",
        ),
        (None, 2, "unreachable"),
    ],
)
def test_outcomes(tmp_path: Path, report: dict | None, code: int, said: str) -> None:
    """Clean is 0, findings 1, an unreachable or silent database 2 (never a false clean)."""
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\na==1\n")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(fake_pip_audit(tmp_path, report)),
            str(lock),
            "pip==26.3",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert said in done.stdout
    json.dumps(report)  # the stand-in's report is plain JSON
