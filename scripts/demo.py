"""The demo: one sharing agreement, end to end, on real parts, all state under .demo/.

Starts a partner SFTP server (real sshd), makes demo keys, writes synthetic source data, runs the
agreement's exchange through Airflow (`airflow dags test`, SQLite), then plays the partner:
verifies and decrypts the drop with `exchange receive` and with the standard `age` tool,
and finally verifies the audit ledger. Safe to run again: keys and data are reused, and each
run adds one drop.

It leaves `.demo/env.sh` to carry on from (`source .demo/env.sh`): every path in it is found
from the file's own folder, and `.demo/airflow/airflow.cfg` holds no path, so a copy of
`.demo/` works on its own and never writes into the original.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import yaml
from cryptography.fernet import Fernet

from exchange import keys, synth
from exchange.contract import read_document
from exchange.files import private_dir, write_private
from exchange.sandbox import PartnerSftpServer
from exchange.trust import trust_entry

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
APPROVERS = DEMO / "operator" / "approvers.json"  # the operator's trust anchor
CONTRACT = "school-attendance-to-early-help"
NHS_CONTRACT = "acute-trust-ed-frequent-attenders-to-adult-social-care"
ENV_FILE = DEMO / "env.sh"
DAG_ID = f"exchange__{CONTRACT}"
ROWS = 20_000
BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(args: list[str], env: dict[str, str], log: Path | None = None) -> str:
    """Run a command; on failure show its output's tail and stop the demo."""
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output)
    if result.returncode != 0:
        print(output[-4000:], file=sys.stderr)
        sys.exit(f"demo: `{' '.join(args[:3])} ...` failed with exit code {result.returncode}")
    return result.stdout


def key_pair(kind: str, path: Path) -> str:
    """Reuse a demo key if present, else generate it; return the public half."""
    if not path.exists():
        keys.generate(kind, path, comment=f"demo {path.stem}")
    return path.with_name(path.name + ".pub").read_text().split()[0 if kind == "age" else 1]


def main() -> None:
    gateway_home = private_dir(DEMO / "gateway")
    partner_keys = private_dir(DEMO / "partner-keys")
    step("Generating demo keys (gateway, partner, IG officer, pseudonymisation key)")
    private_dir(gateway_home / "keys")
    officer_key = private_dir(DEMO / "ig") / "officer.key"
    if not officer_key.exists():
        keys.generate("signing", officer_key, comment="Demo IG Officer")
    key_pair("signing", gateway_home / "keys" / "gateway.key")
    partner_recipient = key_pair("age", partner_keys / "early-help.age")
    pseudonym_file = gateway_home / "keys" / "pseudonym.key"
    disclosure_file = gateway_home / "keys" / "disclosure.key"
    nhs_pseudonym_file = gateway_home / "keys" / "ed-attenders-pseudonym.key"
    for secret_file in (pseudonym_file, disclosure_file, nhs_pseudonym_file):
        if not secret_file.exists():
            write_private(secret_file, base64.b64encode(secrets.token_bytes(32)))
    print(f"   partner's age public key: {partner_recipient}")

    step(f"Writing {ROWS:,} rows of synthetic source data (16 columns)")
    source_dir = private_dir(DEMO / "source")
    source = source_dir / "attendance_export.csv"
    if not source.exists():
        synth.write(source, ROWS, seed=2026)
    print(f"   {source}")

    step("Starting the partner's SFTP server (OpenSSH sshd on 127.0.0.1)")
    with PartnerSftpServer(DEMO / "partner") as server:
        inbox = server.root / "inbox" / "attendance"
        inbox.mkdir(parents=True, exist_ok=True)
        print(f"   listening on {server.host}:{server.port}")
        contracts = write_demo_contract(partner_recipient, server.host_public_key, officer_key)
        write_airflow_cfg(DEMO / "airflow")
        write_env_file(DEMO, REPO, server.port, server.username)
        # The demo runs in the environment it leaves behind, so carrying on from it works.
        env = load_env_file(ENV_FILE)
        contract_file = str(contracts / f"{CONTRACT}.yaml")

        step("IG officer: exchange contract lint, then exchange contract approve")
        print("   " + run([str(BIN / "exchange"), "contract", "lint", contract_file], env).strip())
        approved = run(
            [
                str(BIN / "exchange"),
                "contract",
                "approve",
                contract_file,
                "--key",
                str(officer_key),
                "--yes",
            ],
            env,
        )
        print("   " + approved.strip().replace("\n", "\n   "))

        step("Running the exchange through Airflow: airflow dags test " + DAG_ID)
        airflow_log = DEMO / "airflow" / "dags-test.log"
        if not (DEMO / "airflow" / "airflow.db").exists():
            run([str(BIN / "airflow"), "db", "migrate"], env)
        before = set(p.name for p in inbox.iterdir())
        run([str(BIN / "airflow"), "dags", "test", DAG_ID], env, log=airflow_log)
        new = sorted(set(p.name for p in inbox.iterdir()) - before)
        if len(new) != 1:
            sys.exit(f"demo: expected one new drop in the partner inbox, found {len(new)}")
        drop = inbox / new[0]
        print(f"   DAG run succeeded (log: {airflow_log})")
        print(f"   drop delivered: {drop}")
        for item in sorted(drop.iterdir()):
            print(f"     {item.name:22} {item.stat().st_size:>10,} bytes")

        run_nhs_agreement(server, env, partner_recipient, officer_key)

    step("Partner: exchange receive (verify signature and checksum, decrypt, count rows)")
    received = DEMO / "received"
    out = run(
        [
            str(BIN / "exchange"),
            "receive",
            str(drop),
            "--identity",
            str(partner_keys / "early-help.age"),
            "--sender-key",
            str(gateway_home / "keys" / "gateway.key.pub"),
            "--out",
            str(received),
        ],
        env,
    )
    print("   " + out.strip())

    step("Partner: the same drop with the standard age tool (age -d -i ...)")
    payload = next(drop.glob("*.age"))
    plain = subprocess.run(
        ["age", "-d", "-i", str(partner_keys / "early-help.age"), str(payload)],
        capture_output=True,
        check=True,
    ).stdout
    ours = (received / f"{drop.name}.csv").read_bytes()
    print(f"   age decrypted {len(plain):,} bytes; identical to exchange receive: {plain == ours}")
    print("   first lines:")
    for line in plain.decode().splitlines()[:4]:
        print(f"     {line}")

    step("Auditor: exchange audit verify")
    print("   " + run([str(BIN / "exchange"), "audit", "verify"], env).strip())

    step("Auditor: who received data about one person? (exchange audit subject)")
    first = pacsv.open_csv(
        source,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=["person_id", "objection"]),
    ).read_next_batch()
    person = next(p for p, o in zip(*first.to_pydict().values(), strict=True) if not o)
    print(f"   exchange audit subject {person} --reason demo-SAR-1")
    found = run([str(BIN / "exchange"), "audit", "subject", person, "--reason", "demo-SAR-1"], env)
    for line in found.strip().splitlines():
        print(f"     {line}")

    step("Where everything is")
    for label, path in [
        ("demo state", DEMO),
        ("contract used", contracts / f"{CONTRACT}.yaml"),
        ("its approval", contracts / f"{CONTRACT}.approval.json"),
        ("source data", source),
        ("partner SFTP root", server.root),
        ("received data", received),
        ("audit ledger", gateway_home / "audit.db"),
        ("Airflow home", DEMO / "airflow"),
        ("environment", ENV_FILE),
    ]:
        print(f"   {label:18} {path}")

    step("Carry on from here (in a new shell)")
    for line in carry_on_lines():
        print(f"   {line}")


def carry_on_lines() -> list[str]:
    """The commands that pick up where the demo stopped."""
    return [
        f"source {os.path.relpath(ENV_FILE)}",
        "# the partner's SFTP server, on the port env.sh names (Ctrl-C stops it):",
        'python -m exchange.sandbox serve "$EXCHANGE_DEMO/partner" '
        '--port "$EXCHANGE_DEMO_SFTP_PORT" &',
        f"exchange run {CONTRACT}          # another drop, without Airflow",
        f"airflow dags test {DAG_ID}   # the same through Airflow",
        "exchange audit verify",
        'ls "$EXCHANGE_DEMO/partner/root/inbox/attendance"',
        "# a copy works on its own: cp -a .demo /tmp/demo-copy && source /tmp/demo-copy/env.sh",
    ]


def run_nhs_agreement(
    server: PartnerSftpServer, env: dict[str, str], recipient: str, officer_key: Path
) -> None:
    """The second sample: an NHS trust's extract as its system writes it, as CSV and as Parquet.

    Both forms of the same rows go through `exchange run`; the partner's payloads are identical."""
    step(f"Second agreement: {NHS_CONTRACT} (an NHS trust's extract, CSV and Parquet)")
    document = read_document(REPO / "contracts" / f"{NHS_CONTRACT}.yaml")
    for prop in document["customProperties"]:
        if prop["property"] == "recipientKeys":
            prop["value"] = [recipient]
    document["servers"][0]["customProperties"] = [
        {"property": "hostKeys", "value": [server.host_public_key]}
    ]
    contract = DEMO / "contracts" / f"{NHS_CONTRACT}.yaml"
    contract.write_text(yaml.safe_dump(document, sort_keys=False))
    (server.root / "inbox" / "ed-attenders").mkdir(parents=True, exist_ok=True)
    nhs_env = env  # its SFTP connection and pseudonymisation key are in env.sh
    print("   " + run([str(BIN / "exchange"), "contract", "lint", str(contract)], nhs_env).strip())
    approve = [str(BIN / "exchange"), "contract", "approve", str(contract), "--yes", "--key"]
    print("   " + run([*approve, str(officer_key)], nhs_env).strip().splitlines()[-2])
    payloads = []
    for suffix in ("csv", "parquet"):
        source = DEMO / "source" / f"ed_attendances.{suffix}"
        if not source.exists():
            synth.write_ed_attenders(source, 2000, seed=2026)
        before = set((server.root / "inbox" / "ed-attenders").iterdir())
        ran = run([str(BIN / "exchange"), "run", NHS_CONTRACT, "--source", source.name], nhs_env)
        print("   " + ran.strip())
        (drop,) = set((server.root / "inbox" / "ed-attenders").iterdir()) - before
        payloads.append((drop / "data.csv.age").read_bytes())
    identity = DEMO / "partner-keys" / "early-help.age"
    plain = [
        subprocess.run(
            ["age", "-d", "-i", str(identity)], input=p, capture_output=True, check=True
        ).stdout
        for p in payloads
    ]
    print(f"   payloads from the CSV and the Parquet forms identical: {plain[0] == plain[1]}")
    if plain[0] != plain[1]:
        sys.exit("demo: the CSV and Parquet forms of one extract gave different payloads")


def write_demo_contract(recipient: str, host_key: str, officer_key: Path) -> Path:
    """The sample agreement, addressed to the demo partner's keys, with the demo IG officer."""
    contracts = DEMO / "contracts"
    contracts.mkdir(parents=True, exist_ok=True)
    # The operator's trust anchor lives outside the contracts folder (docs/operators.md).
    officer_pub = officer_key.with_name(officer_key.name + ".pub")
    trusted = {"approvers": [trust_entry("Demo Officer (IG)", officer_pub.read_text())]}
    APPROVERS.parent.mkdir(mode=0o755, exist_ok=True)
    APPROVERS.write_text(json.dumps(trusted, indent=2) + "\n")
    APPROVERS.chmod(0o644)
    document = read_document(REPO / "contracts" / f"{CONTRACT}.yaml")
    for prop in document["customProperties"]:
        if prop["property"] == "recipientKeys":
            prop["value"] = [recipient]
    document["servers"][0]["customProperties"] = [{"property": "hostKeys", "value": [host_key]}]
    (contracts / f"{CONTRACT}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    print(f"   contract: {contracts / f'{CONTRACT}.yaml'} (partner's keys pinned)")
    return contracts


# Keys Airflow would otherwise write into airflow.cfg with every path beside them. Kept from an
# existing file, so the metadata database's encrypted fields stay readable.
AIRFLOW_CFG_KEYS = (("core", "fernet_key"), ("api", "secret_key"), ("api_auth", "jwt_secret"))


def write_airflow_cfg(airflow_home: Path) -> Path:
    """Write an airflow.cfg that names no path, so the folder can be copied or moved.

    Airflow writes its full default configuration, with absolute paths to its database, logs
    and DAGs, when it finds no airflow.cfg. Here the file holds only settings and keys; every
    path comes from AIRFLOW_HOME and the variables in env.sh.
    """
    cfg = private_dir(airflow_home) / "airflow.cfg"
    old = configparser.ConfigParser(interpolation=None, strict=False)
    if cfg.exists():
        old.read(cfg)
    fresh = {
        "fernet_key": Fernet.generate_key().decode(),
        "secret_key": base64.b64encode(secrets.token_bytes(16)).decode(),
        "jwt_secret": base64.b64encode(secrets.token_bytes(16)).decode(),
    }
    lines = [
        "# Written by `make demo`. No paths here: Airflow derives them from AIRFLOW_HOME,",
        "# and .demo/env.sh sets the rest, so a copy of .demo/ never writes into this one.",
    ]
    sections = {"core": ["load_examples = False"], "api": [], "api_auth": []}
    for section, key in AIRFLOW_CFG_KEYS:
        value = old.get(section, key, fallback="") or fresh[key]
        sections[section].append(f"{key} = {value}")
    for section, options in sections.items():
        lines += ["", f"[{section}]", *options]
    write_private(cfg, ("\n".join(lines) + "\n").encode(), overwrite=True)
    return cfg


def write_env_file(demo: Path, repo: Path, port: int, username: str) -> Path:
    """Write demo/env.sh: the demo's environment, to source and carry on from.

    Every state path is computed from the file's own folder when it is sourced, so a copy of
    the folder is self-contained. Only the code (the repository's dags/ and the venv's
    commands) is named absolutely; EXCHANGE_DEMO_REPO and EXCHANGE_DEMO_BIN override it. The
    file holds no secret: keys are read from the files beside it when it is sourced.
    """
    sftp = (
        '{"host": "127.0.0.1", "port": %s, "username": "%s", '
        '"key_file": "%s/partner/keys/client_ed25519", '
        '"known_hosts": "%s/partner/keys/known_hosts"}'
    )
    airflow_sftp = (
        '{"conn_type": "sftp", "host": "127.0.0.1", "port": %s, "login": "%s", "extra": '
        '{"key_file": "%s/partner/keys/client_ed25519", '
        '"known_hosts": "%s/partner/keys/known_hosts"}}'
    )
    user = json.dumps(username)[1:-1]
    lines = [
        "# The demo's environment: source it to carry on from `make demo`.",
        "#   source .demo/env.sh",
        "# Paths are found from this file's own folder, so a copy of .demo/ works on its own.",
        "# No secret is written here: keys are read from the files beside it.",
        'EXCHANGE_DEMO="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd -P)"',
        "export EXCHANGE_DEMO",
        f"export EXCHANGE_DEMO_REPO=${{EXCHANGE_DEMO_REPO:-{shlex.quote(str(repo))}}}",
        f"export EXCHANGE_DEMO_BIN=${{EXCHANGE_DEMO_BIN:-{shlex.quote(str(BIN))}}}",
        "# The partner's SFTP port in the last demo; start the server on it (see below).",
        f"export EXCHANGE_DEMO_SFTP_PORT=${{EXCHANGE_DEMO_SFTP_PORT:-{port}}}",
        'export PATH="$EXCHANGE_DEMO_BIN:$PATH"',
        "",
        'export AIRFLOW_HOME="$EXCHANGE_DEMO/airflow"',
        'export AIRFLOW_CONFIG="$AIRFLOW_HOME/airflow.cfg"',
        'export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"',
        'export AIRFLOW__LOGGING__BASE_LOG_FOLDER="$AIRFLOW_HOME/logs"',
        'export AIRFLOW__CORE__DAGS_FOLDER="$EXCHANGE_DEMO_REPO/dags"',
        "export AIRFLOW__CORE__LOAD_EXAMPLES=False",
        "",
        'export EXCHANGE_HOME="$EXCHANGE_DEMO/gateway"',
        'export EXCHANGE_CONTRACTS="$EXCHANGE_DEMO/contracts"',
        'export EXCHANGE_APPROVERS="$EXCHANGE_DEMO/operator/approvers.json"',
        'export EXCHANGE_SOURCE_DIR="$EXCHANGE_DEMO/source"',
        "# The ledger and signing key are the defaults under EXCHANGE_HOME.",
        "unset EXCHANGE_AUDIT_URL EXCHANGE_SIGNING_KEY EXCHANGE_SECRETS",
        "",
        "# The partner's SFTP server, for Airflow and for `exchange run`.",
        f"AIRFLOW_CONN_EARLY_HELP_SFTP=$(printf '{airflow_sftp}' "
        f'"$EXCHANGE_DEMO_SFTP_PORT" "{user}" "$EXCHANGE_DEMO" "$EXCHANGE_DEMO")',
        f"EXCHANGE_CONN_EARLY_HELP_SFTP=$(printf '{sftp}' "
        f'"$EXCHANGE_DEMO_SFTP_PORT" "{user}" "$EXCHANGE_DEMO" "$EXCHANGE_DEMO")',
        'EXCHANGE_CONN_ADULT_SOCIAL_CARE_SFTP="$EXCHANGE_CONN_EARLY_HELP_SFTP"',
        "export AIRFLOW_CONN_EARLY_HELP_SFTP EXCHANGE_CONN_EARLY_HELP_SFTP "
        "EXCHANGE_CONN_ADULT_SOCIAL_CARE_SFTP",
        "# Pseudonymisation and disclosure keys, from their 0600 files.",
        'AIRFLOW_VAR_EARLY_HELP_PSEUDONYM_KEY="$(cat "$EXCHANGE_HOME/keys/pseudonym.key")"',
        'AIRFLOW_VAR_DISCLOSURE_KEY="$(cat "$EXCHANGE_HOME/keys/disclosure.key")"',
        'EXCHANGE_SECRET_EARLY_HELP_PSEUDONYM_KEY="$AIRFLOW_VAR_EARLY_HELP_PSEUDONYM_KEY"',
        'EXCHANGE_SECRET_DISCLOSURE_KEY="$AIRFLOW_VAR_DISCLOSURE_KEY"',
        "EXCHANGE_SECRET_ED_ATTENDERS_PSEUDONYM_KEY="
        '"$(cat "$EXCHANGE_HOME/keys/ed-attenders-pseudonym.key")"',
        "export AIRFLOW_VAR_EARLY_HELP_PSEUDONYM_KEY AIRFLOW_VAR_DISCLOSURE_KEY "
        "EXCHANGE_SECRET_EARLY_HELP_PSEUDONYM_KEY EXCHANGE_SECRET_DISCLOSURE_KEY "
        "EXCHANGE_SECRET_ED_ATTENDERS_PSEUDONYM_KEY",
    ]
    path = demo / "env.sh"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


def load_env_file(path: Path) -> dict[str, str]:
    """The environment a shell has after sourcing path, starting from ours without our own
    AIRFLOW_* and EXCHANGE_* variables (so nothing from the caller's shell leaks in)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE"))}
    result = subprocess.run(
        ["bash", "-c", '. "$1" && env -0', "env.sh", str(path)],
        env=base,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"demo: sourcing {path} failed: {result.stderr.decode(errors='replace')}")
    pairs = (item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


if __name__ == "__main__":
    if shutil.which("age") is None:
        sys.exit("demo: the `age` tool is missing; run `make system`")
    main()
