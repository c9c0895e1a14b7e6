"""Attacks on the files the gateway writes and the key files it reads (issue 10, defect 12).

A planted symbolic link must not redirect a write, a rotated secrets file must never be 0644,
and a private key that group or others can read is refused with the fix in the message.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Workspace

from exchange import keys
from exchange.crypto import age, signing
from exchange.errors import CryptoError, ExchangeError
from exchange.files import (
    UnsafePath,
    open_private,
    private_dir,
    read_private,
    replace_private,
    write_private,
)
from exchange.secrets import LocalSecrets

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
VICTIM_TEXT = b"ssh-ed25519 AAAA the partner's own authorized key\n"


def mode(path: Path) -> int:
    """Permission bits of a file (not following a link)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file an attacker would like overwritten (stands in for ~/.ssh/authorized_keys)."""
    path = tmp_path / "authorized_keys"
    path.write_bytes(VICTIM_TEXT)
    path.chmod(0o644)
    return path


# -- writes never follow a link ----------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_open_private_refuses_a_symlink(tmp_path: Path, victim: Path, overwrite: bool) -> None:
    """O_NOFOLLOW: the link is refused, its target untouched (content and mode)."""
    link = tmp_path / "payload.age"
    link.symlink_to(victim)
    with pytest.raises(UnsafePath, match="symbolic link"):
        write_private(link, b"secret", overwrite=overwrite)
    assert victim.read_bytes() == VICTIM_TEXT and mode(victim) == 0o644


def test_a_dangling_symlink_is_not_followed_to_create_a_file(tmp_path: Path) -> None:
    """A link to a file that does not exist yet would otherwise create it, wherever it points."""
    target = tmp_path / "elsewhere" / "created"
    target.parent.mkdir()
    link = tmp_path / "manifest.json"
    link.symlink_to(target)
    with pytest.raises(UnsafePath):
        write_private(link, b"{}")
    assert not target.exists()


def test_a_planted_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    """Opening a FIFO for writing blocks until a reader comes: it fails at once instead."""
    fifo = tmp_path / "drop.age"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            write_private(fifo, b"secret", overwrite=True)
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and outcome


def test_open_private_still_writes_a_plain_file_0600(tmp_path: Path) -> None:
    """The ordinary case is unchanged: a new 0600 file, or an existing one tightened."""
    path = tmp_path / "staged.age"
    with open_private(path) as handle:
        handle.write(b"x")
    assert mode(path) == 0o600
    path.chmod(0o644)
    write_private(path, b"y", overwrite=True)
    assert mode(path) == 0o600 and path.read_bytes() == b"y"


def test_private_dir_refuses_a_symlink(tmp_path: Path) -> None:
    """A staging folder replaced by a link to a shared folder is refused, not chmodded."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    link = tmp_path / "staging"
    link.symlink_to(shared, target_is_directory=True)
    with pytest.raises(UnsafePath, match="symbolic link"):
        private_dir(link)
    assert mode(shared) == 0o755
    assert isinstance(UnsafePath("x"), ExchangeError)  # the CLI prints it as one line


@pytest.mark.parametrize("which", ["private", "public"])
def test_key_generation_refuses_a_planted_link(tmp_path: Path, victim: Path, which: str) -> None:
    """`keys generate --overwrite` onto a link (key or .pub) does not write through it."""
    path = tmp_path / "gateway.key"
    keys.generate("signing", path)
    target = path if which == "private" else path.with_name(path.name + ".pub")
    target.unlink()
    target.symlink_to(victim)
    with pytest.raises(UnsafePath):
        keys.generate("signing", path, overwrite=True)
    assert victim.read_bytes() == VICTIM_TEXT


def test_replacing_a_key_is_atomic_and_0600(tmp_path: Path) -> None:
    """An overwritten key is a new 0600 file (renamed into place), whatever the old mode was."""
    path = tmp_path / "gateway.key"
    first = keys.generate("signing", path)
    path.chmod(0o644)
    second = keys.generate("signing", path, overwrite=True)
    assert mode(path) == 0o600 and first.public != second.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.key", "gateway.key.pub"]


# -- the secrets file --------------------------------------------------------------------------


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    """A 0600 secrets file holding one 32-byte key."""
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"secrets": {"k": base64.b64encode(bytes(32)).decode()}}))
    path.chmod(0o600)
    return path


def test_rotation_ignores_a_stale_world_readable_temp_file(secrets_file: Path) -> None:
    """A leftover 0644 `.secrets.json.new` used to lend its mode to the rotated file."""
    stale = secrets_file.with_name(".secrets.json.new")
    stale.write_text("{}")
    stale.chmod(0o644)
    old_umask = os.umask(0)  # the most permissive umask cannot widen it either
    try:
        assert LocalSecrets(secrets_file).rotate("k", b"\x01" * 32) == bytes(32)
    finally:
        os.umask(old_umask)
    assert mode(secrets_file) == 0o600
    assert LocalSecrets(secrets_file).secret("k") == b"\x01" * 32
    assert stale.read_text() == "{}"  # not used, not followed
    left = {p.name for p in secrets_file.parent.iterdir()}
    assert left == {"secrets.json", ".secrets.json.new"}  # no temp file of its own left


def test_rotation_does_not_write_through_a_planted_temp_link(
    secrets_file: Path, victim: Path
) -> None:
    """A link at the old fixed temp name would have received every secret in the file."""
    secrets_file.with_name(".secrets.json.new").symlink_to(victim)
    LocalSecrets(secrets_file).rotate("k", b"\x02" * 32)
    assert victim.read_bytes() == VICTIM_TEXT
    assert mode(secrets_file) == 0o600 and not secrets_file.is_symlink()


def test_rotation_refuses_a_secrets_file_that_is_a_link(tmp_path: Path, secrets_file: Path) -> None:
    """Replacing a link would silently detach the configured file from the real one."""
    link = tmp_path / "linked.json"
    link.symlink_to(secrets_file)
    with pytest.raises(UnsafePath):
        LocalSecrets(link).rotate("k", b"\x03" * 32)


def test_a_failed_replace_leaves_no_copy_behind(tmp_path: Path) -> None:
    """If the rename fails, the temporary file with the secrets is removed."""
    folder = tmp_path / "dir-as-target"
    folder.mkdir()
    (folder / "occupied").mkdir()
    with pytest.raises(OSError):
        replace_private(folder / "occupied", b"secret")  # cannot rename a file over a folder
    assert [p.name for p in folder.iterdir()] == ["occupied"]


def test_cli_rotation_leaves_the_file_0600(workspace: Workspace) -> None:
    """Through the real CLI, with a stale 0644 temp file planted beside the secrets file."""
    secrets_path = Path(workspace.env["EXCHANGE_SECRETS"])
    stale = secrets_path.with_name(f".{secrets_path.name}.new")
    stale.write_text("{}")
    stale.chmod(0o644)
    done = subprocess.run(
        [EXCHANGE, "keys", "rotate", "early-help-pseudonym-key", "--reason", "test"],
        env={**os.environ, **workspace.env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mode(secrets_path) == 0o600


# -- key files are read only when private ------------------------------------------------------

Loader = Callable[[Path], object]


def _signing(path: Path) -> object:
    return signing.load_private_key(path)


def _age(path: Path) -> object:
    return age.load_identities(path)


@pytest.mark.parametrize(("kind", "load"), [("signing", _signing), ("age", _age)])
@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_a_key_file_open_to_others_is_refused_with_the_fix(
    tmp_path: Path, kind: str, load: Loader, bits: int
) -> None:
    """Like OpenSSH: refused, naming the full path and `chmod 600 PATH`; 0600 and 0400 load."""
    pair = keys.generate(kind, tmp_path / f"{kind}.key")
    assert mode(pair.private_path) == 0o600  # as generated
    pair.private_path.chmod(bits)
    with pytest.raises(CryptoError) as caught:
        load(pair.private_path)
    message = str(caught.value)
    assert str(pair.private_path) in message
    assert f"chmod 600 {pair.private_path}" in message and f"{bits:04o}" in message
    assert "\n" not in message
    for fine in (0o600, 0o400):
        pair.private_path.chmod(fine)
        assert load(pair.private_path)


def test_read_private_reads_an_owner_only_file(tmp_path: Path) -> None:
    """The helper returns the bytes of a 0600 file and refuses a 0644 one."""
    path = write_private(tmp_path / "k", b"data")
    assert read_private(path, "key") == b"data"
    path.chmod(0o644)
    with pytest.raises(UnsafePath, match="chmod 600"):
        read_private(path, "key")


def test_cli_run_refuses_a_world_readable_signing_key(workspace: Workspace) -> None:
    """`exchange run` with a 0644 signing key: non-zero exit, one line naming the fix."""
    key = Path(workspace.env["EXCHANGE_HOME"]) / "keys" / "gateway.key"
    key.chmod(0o644)
    source = workspace.source(20)
    done = subprocess.run(
        [EXCHANGE, "run", str(workspace.contract), "--source", str(source)],
        env={**os.environ, **workspace.env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert f"chmod 600 {key}" in done.stderr
    assert "Traceback" not in done.stderr
