"""`make demo` leaves an environment to carry on from, and a copy of .demo/ stands on its own.

The demo itself takes minutes, so these tests build a folder laid out as the demo leaves it,
with the demo's own functions (scripts/demo.py), copy it elsewhere, and check that sourcing the
copy's env.sh points the gateway and Airflow into the copy, and that Airflow run from the copy
writes its database there and nothing into the original.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from exchange.files import private_dir, write_private

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.integration  # runs bash, and Airflow in a subprocess


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()
OLD_CFG = """[core]
dags_folder = {home}/dags
fernet_key = QkcKcVVgdkCh7gdQtB7EZd48kI3pMeHYQoMgD_zRi5A=

[database]
sql_alchemy_conn = sqlite:///{home}/airflow.db

[logging]
base_log_folder = {home}/logs
"""


def demo_like(base: Path) -> Path:
    """A folder laid out as `make demo` leaves .demo/, with an airflow.cfg of the old kind."""
    root = base / ".demo"
    keys = private_dir(root / "gateway" / "keys")
    for name, byte in (("pseudonym", 1), ("disclosure", 2), ("ed-attenders-pseudonym", 3)):
        write_private(keys / f"{name}.key", base64.b64encode(bytes([byte]) * 32))
    for folder in ("contracts", "source", "operator", "partner/keys", "partner/root"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "operator" / "approvers.json").write_text('{"approvers": []}\n')
    airflow = private_dir(root / "airflow")
    (airflow / "airflow.cfg").write_text(OLD_CFG.format(home=airflow))
    demo.write_airflow_cfg(airflow)
    demo.write_env_file(root, REPO, 2222, "someone")
    return root


def sourced(env_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a shell has after `source env_file` (starting from a clean environment)."""
    result = subprocess.run(
        ["bash", "-c", '. "$1" && env -0', "env.sh", str(env_file)],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **(extra or {})},
        capture_output=True,
        check=True,
    )
    return dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)


@pytest.fixture()
def copied(tmp_path: Path) -> tuple[Path, Path]:
    original = demo_like(tmp_path / "original")
    copy = tmp_path / "elsewhere" / "demo-copy"
    shutil.copytree(original, copy)
    return original, copy


def test_airflow_cfg_names_no_path_and_keeps_its_keys(copied: tuple[Path, Path]) -> None:
    original, _ = copied
    text = (original / "airflow" / "airflow.cfg").read_text()
    assert str(original) not in text
    assert "sql_alchemy_conn" not in text and "dags_folder" not in text
    # The old file's Fernet key is kept: the metadata database's encrypted fields stay readable.
    assert "fernet_key = QkcKcVVgdkCh7gdQtB7EZd48kI3pMeHYQoMgD_zRi5A=" in text
    assert "jwt_secret = " in text and "load_examples = False" in text
    assert (original / "airflow" / "airflow.cfg").stat().st_mode & 0o077 == 0


def test_a_copy_env_resolves_into_the_copy(copied: tuple[Path, Path]) -> None:
    original, copy = copied
    # Variables from the caller's shell that would point elsewhere are replaced or removed.
    env = sourced(copy / "env.sh", {"EXCHANGE_AUDIT_URL": "sqlite:////elsewhere/audit.db"})
    assert "EXCHANGE_AUDIT_URL" not in env
    assert env["EXCHANGE_DEMO"] == str(copy.resolve())
    for name in (
        "AIRFLOW_HOME",
        "AIRFLOW_CONFIG",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
        "EXCHANGE_HOME",
        "EXCHANGE_CONTRACTS",
        "EXCHANGE_APPROVERS",
        "EXCHANGE_SOURCE_DIR",
    ):
        assert env[name].startswith(str(copy.resolve()) + "/"), name
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == f"sqlite:///{copy.resolve()}/airflow/airflow.db"
    )
    assert not [k for k, v in env.items() if str(original) in v]
    connection = json.loads(env["EXCHANGE_CONN_EARLY_HELP_SFTP"])
    assert connection["port"] == 2222 and connection["username"] == "someone"
    assert connection["key_file"] == f"{copy.resolve()}/partner/keys/client_ed25519"
    airflow_conn = json.loads(env["AIRFLOW_CONN_EARLY_HELP_SFTP"])
    assert airflow_conn["extra"]["known_hosts"] == f"{copy.resolve()}/partner/keys/known_hosts"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{REPO}/dags"
    # Secrets come from the key files when sourced; env.sh itself holds none.
    disclosure = (copy / "gateway" / "keys" / "disclosure.key").read_text().strip()
    assert env["AIRFLOW_VAR_DISCLOSURE_KEY"] == env["EXCHANGE_SECRET_DISCLOSURE_KEY"] == disclosure
    assert disclosure not in (copy / "env.sh").read_text()
    # The demo's own loader gives the same answer as a user's shell.
    assert demo.load_env_file(copy / "env.sh")["EXCHANGE_HOME"] == env["EXCHANGE_HOME"]


def test_airflow_and_the_gateway_run_from_a_copy_write_only_into_the_copy(
    copied: tuple[Path, Path],
) -> None:
    original, copy = copied
    before = sorted(p.relative_to(original) for p in original.rglob("*"))
    env = sourced(copy / "env.sh")
    script = (
        "from airflow.configuration import conf\n"
        "from exchange.settings import Settings\n"
        "s = Settings.from_env()\n"
        "print(conf.get('database', 'sql_alchemy_conn'))\n"
        "print(conf.get('logging', 'base_log_folder'))\n"
        "print(s.home, s.audit_url, s.contracts, s.approvers, sep='\\n')\n"
    )
    shown = subprocess.run(
        [str(BIN / "python"), "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    for line in shown.stdout.split():
        assert str(copy.resolve()) in line, line
    migrate = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    assert (copy / "airflow" / "airflow.db").is_file()
    assert sorted(p.relative_to(original) for p in original.rglob("*")) == before
    # Airflow kept the short, path-free airflow.cfg rather than writing its full default one.
    assert str(copy) not in (copy / "airflow" / "airflow.cfg").read_text()


def test_the_demo_ends_with_how_to_carry_on() -> None:
    lines = demo.carry_on_lines()
    assert lines[0].startswith("source ") and lines[0].endswith("env.sh")
    assert any(
        "exchange.sandbox serve" in line and "EXCHANGE_DEMO_SFTP_PORT" in line for line in lines
    )
    assert any(line.startswith("airflow dags test exchange__") for line in lines)
