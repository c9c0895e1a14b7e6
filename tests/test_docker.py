"""docker/: what can be checked without a Docker engine.

No engine runs on the project's machines, so no image is built and no container started here.
What is checked: Debian's docker-compose validates and resolves the compose file offline; the
resolved services, health checks, read-only mounts and settings; that neither the compose file
nor .env.example holds a secret; the Dockerfile's install command, user and copies; the
configuration script run for real (modes, JSON, every mounted path made); the partner server's
sshd_config accepted by OpenSSH's own checker; the PostgreSQL init script on a real server.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import redis
import sqlalchemy
import yaml
from pg import PrivatePostgres, bin_dir

from exchange import keys
from exchange.trust import trust_entry

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
SSHD = Path("/usr/sbin/sshd")

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
}
LONG_RUNNING = AIRFLOW_SERVICES - {"airflow-init"} | {"postgres", "redis", "partner-sftp"}
WORKERS = {"airflow-worker-1", "airflow-worker-2"}
# Airflow's own secrets, which every Airflow service reads through its *_CMD settings.
AIRFLOW_SECRET_FILES = {
    "airflow_db_url",
    "airflow_db_url_async",
    "celery_broker_url",
    "celery_result_backend",
    "airflow_fernet_key",
    "airflow_jwt_secret",
    "airflow_api_secret_key",
}
# Host paths the gateway's containers read: never writable from inside.
READ_ONLY_TARGETS = {
    "/etc/exchange/contracts",
    "/etc/exchange/approvers.json",
    "/etc/exchange/keys",
    "/etc/exchange/secrets",
    "/srv/exchange/sources",
}

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (make system installs Debian's docker-compose 1.29)",
)


def compose_config(env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    """The compose file as docker-compose 1.29 resolves it, offline."""
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (make system installs it)")
    return compose_config()


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()}


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_compose_has_the_whole_topology(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis", "partner-sftp", "volume-init"}
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-worker-1"] == commands["airflow-worker-2"] == "celery worker"
    # Two workers a task instance can tell apart.
    assert services["airflow-worker-1"]["hostname"] != services["airflow-worker-2"]["hostname"]
    assert set(config["volumes"]) >= {"postgres-data", "exchange-state", "partner-inbox"}
    # The UI and API are published on loopback only.
    (port,) = services["airflow-apiserver"]["ports"]
    assert str(port).startswith("127.0.0.1:")
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_every_long_running_service_has_a_health_check(config: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = config["services"][name].get("healthcheck")
        assert check and check["test"], f"{name} has no health check"
    # A worker is healthy only when the gateway's own preflight passes too.
    for worker in ("airflow-worker-1", "airflow-worker-2"):
        assert "exchange doctor" in " ".join(config["services"][worker]["healthcheck"]["test"])
    # Airflow waits for a healthy database and broker, and for the migration to finish.
    depends = config["services"]["airflow-scheduler"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_every_airflow_service_has_the_gateway_settings(config: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        env = env_of(config["services"][name])
        # Without it a task reads the contracts beside the DAG file, not the mounted ones.
        assert env["EXCHANGE_CONTRACTS"] == "/etc/exchange/contracts", name
        if name in WORKERS:
            assert env["EXCHANGE_APPROVERS"] == "/etc/exchange/approvers.json", name
            assert env["EXCHANGE_SIGNING_KEY"] == "/etc/exchange/keys/gateway.key", name
            assert env["EXCHANGE_AUDIT_URL"].startswith("postgresql+psycopg://exchange@"), name
            assert env["EXCHANGE_SECRETS"] == "/etc/exchange/secrets/exchange-secrets.json"
            assert "LocalFilesystemBackend" in env["AIRFLOW__SECRETS__BACKEND"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
        assert env["AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT"] == "False"
        # Sized for a small host, not Airflow's 32 task processes.
        assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 8
        assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) <= 4
        preload = env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]  # what the topology test runs
        module, _, attribute = preload.rpartition(".")
        assert attribute in vars(importlib.import_module(module)), preload
        assert config["services"][name]["user"] != "0:0", name


@pytest.mark.integration  # runs docker-compose, bash or sshd
def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """Each mount's target in the container, with its mode (ro or rw)."""
    mounts = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        mounts[parts[1]] = parts[2] if len(parts) > 2 else "rw"
    return mounts


def test_configuration_is_mounted_read_only(config: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        mounts = mounts_of(config["services"][name])
        targets = READ_ONLY_TARGETS if name in WORKERS else {"/etc/exchange/contracts"}
        for target in targets:
            assert mounts.get(target) == "ro", f"{name}: {target} is {mounts.get(target)}"
        assert all(mode == "ro" for target, mode in mounts.items() if target.startswith("/etc"))
    for volume in config["services"]["partner-sftp"]["volumes"]:
        if volume.split(":")[1] == "/etc/partner-sftp/keys":
            assert volume.endswith(":ro")
    # Both workers share the state folder (staging), so deliver may run on either.
    worker_state = [
        {v for v in config["services"][w]["volumes"] if ":/var/lib/exchange:" in v}
        for w in ("airflow-worker-1", "airflow-worker-2")
    ]
    assert worker_state[0] == worker_state[1] == {"exchange-state:/var/lib/exchange:rw"}


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_only_the_workers_hold_the_gateways_keys_secrets_and_sources(
    config: dict[str, Any],
) -> None:
    """The api-server, scheduler, dag-processor and triggerer run no task: a flaw in any of them
    must not reach the signing key, the SFTP login key, the secrets or the source data."""
    secrets = {f"/etc/exchange/secrets/{name}" for name in AIRFLOW_SECRET_FILES}
    for name in AIRFLOW_SERVICES - WORKERS:
        service = config["services"][name]
        mounts = mounts_of(service)
        others = {t for t in mounts if t.startswith(("/etc/", "/srv/", "/var/lib/exchange"))}
        assert others == {"/etc/exchange/contracts", *secrets}, f"{name}: {sorted(others)}"
        env = env_of(service)
        for setting in (
            "EXCHANGE_SECRETS",
            "EXCHANGE_SOURCE_DIR",
            "EXCHANGE_AUDIT_URL",
            "PGPASSFILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AIRFLOW__SECRETS__BACKEND",
        ):
            assert setting not in env, f"{name} has {setting}"
    for name in WORKERS:
        mounts = mounts_of(config["services"][name])
        assert {"/etc/exchange/keys", "/etc/exchange/secrets", "/srv/exchange/sources"} <= set(
            mounts
        )


SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|FERNET|TOKEN|_KEY)\b|PRIVATE", re.IGNORECASE)


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_no_secret_in_the_compose_file_or_env_example(config: dict[str, Any]) -> None:
    for path in (COMPOSE, ENV_EXAMPLE):
        text = path.read_text()
        assert "PRIVATE KEY" not in text, path
        # A login in a URL (user:password@host).
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), path
        # A long run of mixed-case letters and digits, as a key or a generated password is.
        for token in re.findall(r"[A-Za-z0-9+/_=-]{24,}", text):
            mixed = all(re.search(c, token) for c in ("[a-z]", "[A-Z]", "[0-9]"))
            assert not mixed, f"{path}: {token[:6]}... looks like a key"
    for name, service in config["services"].items():
        for key, value in env_of(service).items():
            if key.endswith("_CMD") or key.endswith("_FILE") or not SECRET_NAMES.search(key):
                continue
            # A setting named like a secret may only point at a file, never hold the value.
            assert value.startswith("/"), f"{name}: {key} holds a value, not a file path"
    example_keys = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert used <= example_keys, f"not in .env.example: {sorted(used - example_keys)}"


def test_dockerfile_installs_from_the_lock_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in lines
    # The same two pip steps as `make install`: the bootstrap pins, then -c requirements.lock.
    makefile = (REPO / "Makefile").read_text()
    bootstrap = re.search(r"^BOOTSTRAP := (.+)$", makefile, re.MULTILINE)
    assert (
        bootstrap
        and f"pip install -q --no-cache-dir --disable-pip-version-check {bootstrap[1]}" in (text)
    )
    install = re.search(r"-c requirements\.lock '\.\[([a-z0-9,]+)\]'", text)
    assert install, "the project must be installed with -c requirements.lock"
    extras = set(install[1].split(","))
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = set(optional["optional-dependencies"])
    assert extras <= declared, f"extras not in pyproject.toml: {sorted(extras - declared)}"
    assert {"quality", "airflow", "postgres", "celery"} <= extras
    # Every package those extras name is pinned by the lock, so the image gets tested versions.
    pinned = {
        re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for extra in extras:
        for requirement in optional["optional-dependencies"][extra]:
            name = re.split(r"[=<>\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            assert name in pinned, f"{name} (extra {extra}) is not pinned in requirements.lock"
    assert "dev" not in extras
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users[-1] == "airflow", "the image must end as the unprivileged airflow user"
    # The code is installed as root into the interpreter's site-packages, never into the
    # runtime user's own (which it could edit, or add a .pth file to).
    install_at = next(i for i, line in enumerate(lines) if "-c requirements.lock" in line)
    user_then = [line.split()[1] for line in lines[:install_at] if line.startswith("USER ")]
    assert user_then[-1] == "root", "pip must run as root"
    assert "ENV PIP_USER=false" in lines[:install_at]
    assert "--user" not in text
    assert 'chown -R root:root "$site" && chmod -R go-w "$site"' in text
    assert "rm -rf /home/airflow/.local" in text and "PYTHONNOUSERSITE=1" in text
    for line in lines:
        if line.startswith("COPY "):
            assert "--chown=root:root" in line, line
    # What is copied in: the package, the lock and the DAGs; never contracts, keys or state.
    copied = [
        part
        for line in lines
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
        if not part.startswith("--")
    ]
    assert set(copied) == {
        "pyproject.toml",
        "requirements.lock",
        "README.md",
        "exchange",
        "validators",
        "dags/",
    }
    assert re.search(r"apt-get install -y --no-install-recommends age openssh-client", text)
    for variable in ("EXCHANGE_CONTRACTS", "EXCHANGE_APPROVERS", "EXCHANGE_SIGNING_KEY"):
        assert f"{variable}=/etc/exchange/" in text
    # The build context: only what the image copies (no .demo/, .venv/, keys).
    for ignore in (REPO / ".dockerignore", DOCKER / "Dockerfile.dockerignore"):
        rules = [r for r in ignore.read_text().splitlines() if r and not r.startswith("#")]
        assert rules[0] == "**"
        assert {r.lstrip("!").split("/")[0] for r in rules[1:] if r.startswith("!")} == {
            "pyproject.toml",
            "requirements.lock",
            "README.md",
            "exchange",
            "validators",
            "dags",
        }


def test_system_deps_installs_docker_compose_without_recommends() -> None:
    script = (REPO / "scripts" / "system-deps.sh").read_text()
    assert "missing+=(docker-compose)" in script
    assert "missing+=(redis-server)" in script
    assert "apt-get install -y -qq --no-install-recommends" in script


def run_init_config(target: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXCHANGE_ENV_FILE": str(env_file)}
    return subprocess.run(
        ["bash", str(DOCKER / "init-config.sh"), str(target)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("compose-config")
    target, env_file = base / "local", base / "compose.env"
    result = run_init_config(target, env_file)
    assert result.returncode == 0, result.stderr
    return target, env_file


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_init_config_makes_private_files_and_runs_again_safely(
    generated: tuple[Path, Path],
) -> None:
    target, env_file = generated
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    for name in ("secrets", "keys", "postgres", "redis", "partner-sftp"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o700, name
    for path in [*(target / "secrets").iterdir(), target / "keys" / "gateway.key"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for name in ("airflow-connections.json", "airflow-variables.json", "exchange-secrets.json"):
        json.loads((target / "secrets" / name).read_text())
    assert json.loads((target / "approvers.json").read_text()) == {"approvers": []}
    host_key = (target / "partner-sftp" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert (target / "keys" / "known_hosts").read_text().split() == [
        "[partner-sftp]:2222",
        *host_key,
    ]
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["AIRFLOW_UID"] != "0"
    assert env["EXCHANGE_CONFIG_DIR"] == str(target)
    # A second run fills in only what is missing: no password or key changes under a deployment.
    result = run_init_config(target, env_file)
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


@pytest.mark.integration  # runs docker-compose, bash or sshd
def test_init_config_passes_exchange_doctor_once_approvers_are_listed(
    generated: tuple[Path, Path], tmp_path: Path
) -> None:
    """What init-config makes is what the workers' health check (exchange doctor) asks for; the
    one thing it leaves to the operator is whom to trust."""
    target, _ = generated
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")},
        "EXCHANGE_HOME": str(tmp_path / "home"),
        "EXCHANGE_SIGNING_KEY": str(target / "keys" / "gateway.key"),
        "EXCHANGE_SECRETS": str(target / "secrets" / "exchange-secrets.json"),
        "EXCHANGE_APPROVERS": str(tmp_path / "etc" / "approvers.json"),
        "EXCHANGE_CONTRACTS": str(target / "contracts"),
        "EXCHANGE_SOURCE_DIR": str(target / "sources"),
    }
    (tmp_path / "etc").mkdir(mode=0o755)
    (tmp_path / "etc").chmod(0o755)
    shutil.copy(target / "approvers.json", tmp_path / "etc" / "approvers.json")
    doctor = [str(Path(sys.executable).parent / "exchange"), "doctor"]
    first = subprocess.run(doctor, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 1 and "approvers" in first.stdout
    assert first.stdout.strip().splitlines() == [
        line for line in first.stdout.strip().splitlines() if "approvers" in line
    ]
    keys.generate("signing", tmp_path / "officer.key", comment="Officer")
    entry = trust_entry("Ivy Officer", (tmp_path / "officer.key.pub").read_text())
    (tmp_path / "etc" / "approvers.json").write_text(json.dumps({"approvers": [entry]}))
    ready = subprocess.run(doctor, env=env, capture_output=True, text=True, check=False)
    assert ready.returncode == 0, ready.stdout + ready.stderr


@pytest.mark.integration  # runs docker-compose, bash or sshd
@needs_compose
def test_every_host_path_the_compose_file_mounts_is_made_by_init_config(
    generated: tuple[Path, Path],
) -> None:
    target, env_file = generated
    config = compose_config(env_file)
    sources = set()
    for service in config["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/"):
                sources.add(Path(source))
    assert sources, "no host mounts resolved"
    for source in sources:
        assert source.exists(), f"mounted but not made: {source}"
    assert Path(target / "secrets" / "airflow_db_url") in set((target / "secrets").iterdir())
    env = env_of(config["services"]["airflow-worker-1"])
    # Every file an Airflow *_CMD setting reads is made.
    for key, value in env.items():
        if key.endswith("_CMD"):
            name = value.removeprefix("cat /etc/exchange/secrets/")
            assert (target / "secrets" / name).is_file(), key


@pytest.mark.integration  # runs docker-compose, bash or sshd
@pytest.mark.skipif(not SSHD.exists(), reason="OpenSSH server not installed (make system)")
def test_partner_sshd_config_passes_openssh_own_check(
    generated: tuple[Path, Path], tmp_path: Path
) -> None:
    target, _ = generated
    text = (DOCKER / "partner-sftp" / "sshd_config").read_text()
    text = text.replace("/etc/partner-sftp/keys", str(target / "partner-sftp"))
    text = text.replace("AllowUsers partner", f"AllowUsers {os.environ.get('USER', 'root')}")
    config = tmp_path / "sshd_config"
    config.write_text(text)
    result = subprocess.run(
        [str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "ForceCommand internal-sftp" in text and "PasswordAuthentication no" in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration  # runs sshd
@pytest.mark.skipif(
    not SSHD.exists() or os.geteuid() != 0,
    reason="needs the OpenSSH server (make system) and root, to start it as another user",
)
def test_partner_server_serves_sftp_only_as_an_unprivileged_user(
    generated: tuple[Path, Path],
) -> None:
    """The partner image's sshd_config and init-config's keys, with sshd run as an unprivileged
    user (as the image runs it as `partner`): the gateway's login key gets SFTP, any other key
    is refused. The user is PostgreSQL's, made by Debian's useradd like the image's `partner`
    (Debian's sshd refuses an account whose password field is `*`, as `nobody`'s is)."""
    target, _ = generated
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no unprivileged `postgres` OS user to run sshd as")
    # Not pytest's tmp_path: that lives under a 0700 folder the user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="exchange-test-partner-"))
    try:
        base.chmod(0o755)
        (base / "root" / "inbox").mkdir(parents=True)
        for key in (target / "partner-sftp").iterdir():
            shutil.copy(key, base / key.name)
        port = _free_port()
        config = (DOCKER / "partner-sftp" / "sshd_config").read_text()
        for old, new in (
            ("/etc/partner-sftp/keys", str(base)),
            ("/srv/sftp", str(base / "root")),
            ("AllowUsers partner", f"AllowUsers {user.pw_name}"),
            ("Port 2222", f"Port {port}"),
            ("ListenAddress 0.0.0.0", "ListenAddress 127.0.0.1"),
        ):
            assert old in config
            config = config.replace(old, new)
        (base / "sshd_config").write_text(config)
        for path in [base, *base.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        with (base / "sshd.log").open("wb") as log:
            server = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(base / "sshd_config")],
                user=user.pw_uid,
                group=user.pw_gid,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            host_key = (base / "ssh_host_ed25519_key.pub").read_text().split()
            known = base / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")

            def client(key_file: Path) -> paramiko.SSHClient:
                ssh = paramiko.SSHClient()
                ssh.load_host_keys(str(known))
                ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
                ssh.connect(
                    "127.0.0.1",
                    port,
                    username=user.pw_name,
                    key_filename=str(key_file),
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=10,
                )
                return ssh

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            try:
                ssh = client(target / "keys" / "early-help-sftp")
            except paramiko.SSHException:
                pytest.fail((base / "sshd.log").read_text()[-2000:])
            with ssh.open_sftp() as sftp:
                sftp.putfo(io.BytesIO(b"probe"), "inbox/probe.txt")
            ssh.close()
            assert (base / "root" / "inbox" / "probe.txt").stat().st_uid == user.pw_uid
            stranger = base / "stranger"
            keys.generate("ssh", stranger, comment="not authorised")
            with pytest.raises(paramiko.AuthenticationException):
                client(stranger)
        finally:
            server.terminate()
            server.wait(timeout=10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.integration  # runs redis-server
@needs_compose
@pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server missing (make system)"
)
def test_redis_health_check_and_broker_url_work_with_the_generated_password(
    generated: tuple[Path, Path], tmp_path: Path
) -> None:
    target, env_file = generated
    port = _free_port()
    conf = target / "redis" / "redis.conf"
    with (tmp_path / "redis.log").open("wb") as log:
        server = subprocess.Popen(
            [
                *("redis-server", str(conf), "--port", str(port), "--bind", "127.0.0.1"),
                *("--dir", str(tmp_path), "--save", ""),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        check = compose_config(env_file)["services"]["redis"]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        # `config` prints the file back with `$$` kept; the container's shell gets `$`.
        command = check[1].replace("$$", "$").replace("/usr/local/etc/redis/redis.conf", str(conf))
        command = command.replace("redis-cli ping", f"redis-cli -p {port} ping")

        def healthy(script: str) -> bool:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if subprocess.run(["sh", "-c", script], capture_output=True).returncode == 0:
                    return True
                time.sleep(0.1)
            return False

        assert healthy(command), (tmp_path / "redis.log").read_text()[-1000:]
        # Without the password the same check fails: the broker is not open.
        assert subprocess.run(
            ["sh", "-c", f"redis-cli -p {port} ping | grep -q PONG"], capture_output=True
        ).returncode
        broker = (target / "secrets" / "celery_broker_url").read_text()
        client = redis.Redis.from_url(broker.replace("@redis:6379/", f"@127.0.0.1:{port}/"))
        assert client.ping() is True
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture()
def databases(postgres: PrivatePostgres, generated: tuple[Path, Path]) -> Iterator[PrivatePostgres]:
    """The compose file's two databases, made by its init script on a real PostgreSQL server."""
    target, _ = generated
    folder = bin_dir()
    assert folder is not None
    env = {
        **os.environ,
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        "PG_SECRETS_DIR": str(target / "postgres"),
        "POSTGRES_USER": postgres.superuser,
        "PGHOST": postgres.host,
        "PGPORT": str(postgres.port),
    }
    result = subprocess.run(
        ["bash", str(DOCKER / "postgres" / "init-databases.sh")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    try:
        assert result.returncode == 0, result.stderr
        yield postgres
    finally:
        for sql in (
            "DROP DATABASE IF EXISTS airflow WITH (FORCE)",
            "DROP DATABASE IF EXISTS exchange WITH (FORCE)",
            "DROP ROLE IF EXISTS airflow",
            "DROP ROLE IF EXISTS exchange",
        ):
            postgres.psql(sql, database="postgres")


def test_postgres_init_script_makes_two_separate_databases(
    databases: PrivatePostgres, generated: tuple[Path, Path]
) -> None:
    target, _ = generated
    postgres = databases
    # The ledger's URL carries no password: libpq finds it in the generated pgpass file.
    pgpass = target / "secrets" / "ledger.pgpass"
    url = f"postgresql+psycopg://exchange@{postgres.host}:{postgres.port}/exchange"
    engine = sqlalchemy.create_engine(url, connect_args={"passfile": str(pgpass)})
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select current_user")).scalar() == "exchange"
    engine.dispose()
    # The gateway's role cannot enter Airflow's database, even with its password.
    other = sqlalchemy.create_engine(
        f"postgresql+psycopg://exchange@{postgres.host}:{postgres.port}/airflow",
        connect_args={"password": (target / "postgres" / "ledger_db_password").read_text().strip()},
    )
    with pytest.raises(sqlalchemy.exc.OperationalError, match="permission denied"):
        other.connect()
    other.dispose()


@pytest.mark.integration  # runs Airflow against a real PostgreSQL server
@needs_compose
def test_airflow_reads_the_compose_settings_and_migrates_its_database(
    databases: PrivatePostgres, generated: tuple[Path, Path], tmp_path: Path
) -> None:
    """A worker's environment as the compose file resolves it, with the secrets folder that
    init-config made (its database host pointed at the test server), under Airflow 3.3."""
    target, env_file = generated
    postgres = databases
    secrets = tmp_path / "secrets"
    shutil.copytree(target / "secrets", secrets)
    for name in ("airflow_db_url", "airflow_db_url_async", "celery_result_backend"):
        text = (secrets / name).read_text()
        assert not text.endswith("\n"), f"{name}: Airflow's *_CMD would keep the newline"
        (secrets / name).write_text(
            text.replace("@postgres:5432/", f"@{postgres.host}:{postgres.port}/")
        )
    resolved = env_of(compose_config(env_file)["services"]["airflow-worker-1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE"))}
    env.update({k: v.replace("/etc/exchange/secrets", str(secrets)) for k, v in resolved.items()})
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    script = (
        "import json\n"
        "from airflow.configuration import conf\n"
        "from airflow.models import Connection, Variable\n"
        "names = ['database:sql_alchemy_conn', 'database:sql_alchemy_conn_async',\n"
        "         'celery:broker_url', 'core:fernet_key', 'api_auth:jwt_secret']\n"
        "out = {n: conf.get(*n.split(':')) for n in names}\n"
        "c = Connection.get_connection_from_secrets('early_help_sftp')\n"
        "out['sftp'] = [c.host, c.port, c.login, c.extra_dejson['known_hosts']]\n"
        "out['disclosure'] = Variable.get('disclosure_key_secret')\n"
        "print(json.dumps(out))\n"
    )
    python = str(Path(sys.executable).parent / "python")
    shown = subprocess.run([python, "-c", script], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    values = json.loads(shown.stdout.strip().splitlines()[-1])
    assert values["database:sql_alchemy_conn"] == (secrets / "airflow_db_url").read_text()
    assert values["database:sql_alchemy_conn_async"].startswith("postgresql+psycopg_async://")
    assert values["celery:broker_url"] == (secrets / "celery_broker_url").read_text()
    assert values["sftp"] == ["partner-sftp", 2222, "partner", "/etc/exchange/keys/known_hosts"]
    variables = json.loads((secrets / "airflow-variables.json").read_text())
    assert values["disclosure"] == variables["disclosure_key_secret"]
    airflow = str(Path(sys.executable).parent / "airflow")
    migrated = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    tables = postgres.psql(
        "select count(*) from information_schema.tables where table_name = 'dag_run'",
        database="airflow",
    )
    assert tables.strip() == "1"
