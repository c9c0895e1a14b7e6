"""Audit the pinned dependencies with pip-audit; never report "clean" for what was not checked.

Usage: python scripts/audit_deps.py PIP_AUDIT LOCKFILE [NAME==VERSION ...]

The extra NAME==VERSION pins are the venv's bootstrap tools (pip, setuptools), which a lock
file made by `pip freeze` leaves out. Exit status: 0 every package audited and none has a
known vulnerability; 1 findings (each printed with its advisory id and fixed versions); 2 the
vulnerability database could not be reached, or did not answer for some packages (pip-audit
itself then says "No known vulnerabilities found", which would be false comfort).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

FINDINGS, UNREACHABLE = 1, 2


def main(argv: list[str]) -> int:
    """Run pip-audit over the lock file (and extra pins) and report as described above."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return UNREACHABLE
    pip_audit, lock, extra = argv[0], Path(argv[1]), argv[2:]
    with tempfile.TemporaryDirectory() as folder:
        requirements = Path(folder) / "requirements.txt"
        lines = [line for line in lock.read_text("utf-8").splitlines() if "==" in line]
        requirements.write_text("\n".join([*lines, *extra]) + "\n", "utf-8")
        report = Path(folder) / "report.json"
        done = subprocess.run(
            [
                pip_audit,
                "--requirement",
                str(requirements),
                "--no-deps",  # the lock is complete: every package is pinned in it
                "--disable-pip",
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(report),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if not report.exists():
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"audit-deps: the vulnerability database is unreachable: {reason}")
            return UNREACHABLE
        result = json.loads(report.read_text("utf-8"))
    dependencies = result.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            print(f"VULNERABLE {dep['name']} {dep.get('version')}: {vuln['id']} (fixed in {fixed})")
    audited = len(dependencies) - len(skipped)
    total = len(dependencies)
    print(f"audit-deps: {audited} of {total} packages audited, {len(vulnerable)} vulnerable")
    if skipped:
        names = ", ".join(d["name"] for d in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(
            f"audit-deps: the vulnerability database did not answer for {len(skipped)} packages "
            f"({names}); they are NOT audited. pip-audit asks PyPI's JSON API per version "
            "(/pypi/NAME/VERSION/json); a mirror or proxy without it, or no network, gives this."
        )
    if vulnerable:
        return FINDINGS
    return UNREACHABLE if skipped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
