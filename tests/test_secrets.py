"""Unit tests for looking up secrets and connections by name (exchange.secrets)."""

from __future__ import annotations

import base64
import json
import traceback
from pathlib import Path

import pytest

from exchange.errors import ExchangeError
from exchange.secrets import LocalSecrets, SecretMissing, SftpConnection, decode_secret

KEY = bytes(range(32))
OTHER = b"another secret value, 32+ bytes long!!"
PASSPHRASE = "SENTINEL-PASSPHRASE-42"
CONNECTION = {
    "host": "sftp.partner.example",
    "port": 2222,
    "username": "gateway",
    "key_file": "/keys/id_ed25519",
    "known_hosts": "/keys/known_hosts",
    "key_passphrase": PASSPHRASE,
}


def b64(data: bytes) -> str:
    """Base64 text of some bytes."""
    return base64.b64encode(data).decode()


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    """A 0600 secrets file with one secret, another secret and one connection."""
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps(
            {
                "secrets": {"pseudonym-key": b64(KEY), "other-key": b64(OTHER)},
                "connections": {"partner-sftp": CONNECTION},
            }
        )
    )
    path.chmod(0o600)
    return path


def everything_shown(exc: BaseException) -> str:
    """The error as a log would show it, traceback included."""
    return "".join(traceback.format_exception(exc))


def test_secret_from_a_0600_file(secrets_file: Path) -> None:
    """A secret is looked up by name and decoded from base64."""
    store = LocalSecrets(secrets_file, env={})
    assert store.secret("pseudonym-key") == KEY
    assert store.secret("other-key") == OTHER


def test_connection_from_a_0600_file(secrets_file: Path) -> None:
    """A connection is built from the file's mapping, with paths as Paths."""
    conn = LocalSecrets(secrets_file, env={}).sftp_connection("partner-sftp")
    assert conn == SftpConnection(
        host="sftp.partner.example",
        port=2222,
        username="gateway",
        key_file=Path("/keys/id_ed25519"),
        known_hosts=Path("/keys/known_hosts"),
        key_passphrase=PASSPHRASE,
    )
    assert PASSPHRASE not in repr(conn)


def test_secret_and_connection_from_environment() -> None:
    """EXCHANGE_SECRET_<NAME> is base64 and EXCHANGE_CONN_<NAME> is JSON; '-' becomes '_'."""
    env = {
        "EXCHANGE_SECRET_PSEUDONYM_KEY": b64(KEY),
        "EXCHANGE_CONN_PARTNER_SFTP": json.dumps({**CONNECTION, "port": None}),
    }
    store = LocalSecrets(None, env=env)
    assert store.secret("pseudonym-key") == KEY
    conn = store.sftp_connection("partner-sftp")
    assert (conn.host, conn.port, conn.username) == ("sftp.partner.example", 22, "gateway")


def test_environment_wins_over_the_file(secrets_file: Path) -> None:
    """A secret set in the environment is used before the file's."""
    store = LocalSecrets(secrets_file, env={"EXCHANGE_SECRET_PSEUDONYM_KEY": b64(OTHER)})
    assert store.secret("pseudonym-key") == OTHER
    assert store.secret("other-key") == OTHER  # still found in the file


def test_environment_only_needs_no_file() -> None:
    """Without a file, a secret missing from the environment is SecretMissing."""
    store = LocalSecrets(None, env={"EXCHANGE_SECRET_A": b64(KEY)})
    assert store.secret("a") == KEY
    with pytest.raises(SecretMissing, match="'b'"):
        store.secret("b")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700, 0o610])
def test_group_or_world_accessible_file_is_refused(secrets_file: Path, mode: int) -> None:
    """A secrets file others can touch is refused before it is read."""
    secrets_file.chmod(mode)
    store = LocalSecrets(secrets_file, env={})
    if mode & 0o077:
        with pytest.raises(SecretMissing, match="chmod 600") as caught:
            store.secret("pseudonym-key")
        assert b64(KEY) not in everything_shown(caught.value)
    else:
        assert store.secret("pseudonym-key") == KEY


def test_missing_secret_names_it_but_shows_no_value(secrets_file: Path) -> None:
    """The error names the wanted secret and never any configured value."""
    store = LocalSecrets(secrets_file, env={"EXCHANGE_SECRET_ENV_ONLY": b64(OTHER)})
    with pytest.raises(SecretMissing) as caught:
        store.secret("no-such-key")
    assert isinstance(caught.value, ExchangeError)
    shown = everything_shown(caught.value)
    assert "'no-such-key'" in str(caught.value)
    for value in (b64(KEY), b64(OTHER), PASSPHRASE, KEY.hex()):
        assert value not in shown


def test_missing_connection_names_it(secrets_file: Path) -> None:
    """An unknown connection name is SecretMissing naming it."""
    with pytest.raises(SecretMissing, match="'nowhere'") as caught:
        LocalSecrets(secrets_file, env={}).sftp_connection("nowhere")
    assert PASSPHRASE not in everything_shown(caught.value)


def test_incomplete_connection_names_what_is_absent() -> None:
    """A connection lacking required keys lists them, without any value."""
    env = {"EXCHANGE_CONN_HALF": json.dumps({"host": "h", "key_passphrase": PASSPHRASE})}
    with pytest.raises(SecretMissing) as caught:
        LocalSecrets(None, env=env).sftp_connection("half")
    message = str(caught.value)
    assert "username" in message and "key_file" in message
    assert "known_hosts" not in message  # optional: the contract pins the host key
    assert "host," not in message
    assert PASSPHRASE not in everything_shown(caught.value)


@pytest.mark.parametrize("text", ["SENTINEL!!not*base64", "YWJj=ZGVm", "abc"])
def test_invalid_base64_names_the_secret_not_the_text(text: str) -> None:
    """A secret that is not base64 is refused; the error names it and hides the text."""
    store = LocalSecrets(None, env={"EXCHANGE_SECRET_BROKEN": text})
    with pytest.raises(SecretMissing) as caught:
        store.secret("broken")
    assert str(caught.value) == "secret 'broken' is not valid base64"
    assert text not in everything_shown(caught.value)


def test_decode_secret_strips_whitespace() -> None:
    """A trailing newline (as `base64` prints) is accepted."""
    assert decode_secret("k", b64(KEY) + "\n") == KEY


def test_the_store_takes_its_variables_from_the_settings(secrets_file: Path) -> None:
    """Settings read EXCHANGE_SECRET_/EXCHANGE_CONN_ variables; nothing else reaches the store."""
    from exchange.settings import Settings

    env = {
        "EXCHANGE_SECRETS": str(secrets_file),
        "EXCHANGE_SECRET_PSEUDONYM_KEY": b64(OTHER),
        "EXCHANGE_HOME": "/nowhere",
        "HOME": "/root",
    }
    settings = Settings.from_env(env)
    assert settings.secret_env() == {"EXCHANGE_SECRET_PSEUDONYM_KEY": b64(OTHER)}
    assert b64(OTHER) not in repr(settings)
    assert LocalSecrets.from_settings(settings).secret("pseudonym-key") == OTHER
