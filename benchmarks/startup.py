"""The gateway's fixed cost: each command's wall and CPU time beside `import great_expectations`.

    python benchmarks/startup.py [--repeat 5] [--rows 1000]

Times, as a user types them and each in a fresh process: the commands that do not validate
data (`contract lint`, `approve`, `diff`, `render`, `audit verify` on a small ledger, `receive`),
a small `exchange run` (which validates with Great Expectations), `python -c "import
great_expectations"` and `python -c pass`. Prints medians of wall and CPU time (CPU is what
a busy machine distorts least), and for the run its difference from
the Great Expectations import (the gateway's own overhead; target: at most 1 s); for the other
commands their time (target: under 1 s) and ratio to a bare interpreter.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from exchange import approval, keys, synth
from exchange.contract import load_contract, read_document
from exchange.crypto.signing import load_private_key
from exchange.sandbox import PartnerSftpServer
from exchange.settings import Settings
from exchange.trust import trust_entry

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "contracts" / "school-attendance-to-early-help.yaml"
FOLDER = "inbox/attendance"
EXCHANGE = str(Path(sys.executable).with_name("exchange"))


def gateway_home(
    root: Path, server: PartnerSftpServer, history: Callable[[Settings], object] | None = None
) -> tuple[dict[str, str], Path, Path]:
    """A gateway delivering to `server`: its environment, approved contract and officer key.

    `history` fills the new gateway's ledger before the contract is approved."""
    home = root / "gateway"
    (home / "keys").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    keys.generate("signing", home / "keys" / "gateway.key")
    partner_key = keys.generate("age", root / "partner.age")
    officer = keys.generate("signing", root / "officer.key", comment="Bench Officer")
    trust = root / "operator" / "approvers.json"
    trust.parent.mkdir()
    entry = trust_entry("Bench Officer", officer.public_path.read_text())
    trust.write_text(json.dumps({"approvers": [entry], "revoked": []}))
    contracts = root / "contracts"
    contracts.mkdir()
    document = read_document(SAMPLE)
    for prop in document["customProperties"]:
        if prop["property"] == "recipientKeys":
            prop["value"] = [partner_key.public]
    document["servers"][0]["customProperties"][0]["value"] = [server.host_public_key]
    contract = contracts / SAMPLE.name
    contract.write_text(yaml.safe_dump(document, sort_keys=False))
    secrets_file = root / "secrets.json"
    secrets_file.write_text(
        json.dumps(
            {
                "connections": {
                    "early-help-sftp": {
                        "host": server.host,
                        "port": server.port,
                        "username": server.username,
                        "key_file": str(server.client_key_path),
                        "known_hosts": str(server.known_hosts_path),
                    }
                },
                "secrets": {
                    name: base64.b64encode(secrets.token_bytes(32)).decode()
                    for name in ("early-help-pseudonym-key", "disclosure-key")
                },
            }
        )
    )
    secrets_file.chmod(0o600)
    (root / "sources").mkdir()
    env = {
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_SECRETS": str(secrets_file),
        "EXCHANGE_CONTRACTS": str(contracts),
        "EXCHANGE_SOURCE_DIR": str(root / "sources"),
        "EXCHANGE_APPROVERS": str(trust),
    }
    if history is not None:
        history(Settings.from_env(env))
    governance = approval.Governance.from_settings(Settings.from_env(env))
    governance.approve(
        load_contract(contract), load_private_key(officer.private_path), now=dt.datetime.now(dt.UTC)
    )
    return env, contract, officer.private_path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    argv: Sequence[str], env: dict[str, str], repeat: int, before: object = None
) -> tuple[float, float]:
    """Median wall and CPU seconds of `argv`, each time in a fresh process; fails loudly on a
    non-zero exit. CPU time is what a busy machine distorts least."""
    walls, cpus = [], []
    for _ in range(repeat):
        if callable(before):
            before()
        start, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu)
        if done.returncode not in (0, 10, 11):  # 10/11: `contract diff` verdicts
            raise SystemExit(f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-300:]}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-startup-"))
    server = PartnerSftpServer(root / "partner").start()
    try:
        (server.root / FOLDER).mkdir(parents=True)
        measure(root, server, args.repeat, args.rows)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, server: PartnerSftpServer, repeat: int, rows: int) -> None:
    env_vars, contract, officer = gateway_home(root, server)
    env = {**os.environ, **env_vars}
    source = synth.write(root / "sources" / "attendance_export.csv", rows, seed=1)
    inbox = server.root / FOLDER

    def clear_inbox() -> None:
        for drop in inbox.iterdir():
            shutil.rmtree(drop)

    run = timed([EXCHANGE, "run", str(contract), "--source", str(source)], env, repeat, clear_inbox)
    # Keep one drop, copied out of the inbox, for `receive`.
    subprocess.run(
        [EXCHANGE, "run", str(contract), "--source", str(source)],
        env=env,
        check=True,
        capture_output=True,
    )
    drop = root / "drop"
    shutil.copytree(next(inbox.iterdir()), drop)
    changed = root / "changed.yaml"
    document = yaml.safe_load(contract.read_text())
    document["description"]["purpose"] += " (reworded)"
    changed.write_text(yaml.safe_dump(document, sort_keys=False))
    approval_file = approval.approval_path(contract)
    out = root / "received"

    def unapprove() -> None:
        approval_file.unlink(missing_ok=True)

    def clear_out() -> None:
        shutil.rmtree(out, ignore_errors=True)

    py = sys.executable
    sender_key = Path(env_vars["EXCHANGE_HOME"]) / "keys" / "gateway.key.pub"
    receive = ["--sender-key", str(sender_key), "--out", str(out)]
    commands: list[tuple[str, list[str], object]] = [
        ("contract lint", [EXCHANGE, "contract", "lint", str(contract)], None),
        ("contract diff", [EXCHANGE, "contract", "diff", str(contract), str(changed)], None),
        (
            "contract render",
            [EXCHANGE, "contract", "render", str(contract), "--out", str(root / "pages")],
            None,
        ),
        (
            "contract approve",
            [EXCHANGE, "contract", "approve", str(contract), "--key", str(officer), "--yes"],
            unapprove,
        ),
        ("audit verify", [EXCHANGE, "audit", "verify", "--public-key", str(sender_key)], None),
        (
            "receive",
            [EXCHANGE, "receive", str(drop), "--identity", str(root / "partner.age"), *receive],
            clear_out,
        ),
    ]
    bare = timed([py, "-c", "pass"], env, repeat)
    great = timed([py, "-c", "import great_expectations"], env, repeat)
    print(f"median of {repeat}, seconds (wall / CPU); fixed-cost targets from issue 13")
    print(f"{'':34}{'wall':>7}{'CPU':>7}")
    print(f"{'python -c pass':<34}{bare[0]:7.2f}{bare[1]:7.2f}")
    print(f"{'python -c import great_expectations':<34}{great[0]:7.2f}{great[1]:7.2f}")
    print(
        f"{f'exchange run ({rows:,} rows)':<34}{run[0]:7.2f}{run[1]:7.2f}   "
        f"{run[0] - great[0]:+.2f} s wall, {run[1] - great[1]:+.2f} s CPU beside the GE import "
        "(target <= +1.00)"
    )
    for label, argv, before in commands:
        seconds, cpu = timed(argv, env, repeat, before)
        verdict = "ok" if seconds < 1 else "OVER 1 s"
        print(
            f"{'exchange ' + label:<34}{seconds:7.2f}{cpu:7.2f}   {seconds / great[0]:.2f}x the GE "
            f"import, {seconds / bare[0]:.1f}x a bare interpreter (wall; target < 1 s: {verdict})"
        )


if __name__ == "__main__":
    main()
