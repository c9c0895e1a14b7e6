"""Preflight: every missing prerequisite of a run at once, each with its full path and its fix.

A first run used to reveal one missing piece per attempt (the signing key, then each secret,
then a file's permissions, then the partner's host key). `exchange doctor [CONTRACT]` checks
them all and lists every problem; `exchange run` runs the local, fast part of the same checks
(`preflight`) after the contract's approval is checked and before any data is read.

Always checked, and so always contacted when configured: the ledger database
(EXCHANGE_AUDIT_URL, when it is not a SQLite file: a connection is opened and closed) and the
shared staging store (EXCHANGE_STAGING, when it is s3://: its bucket is listed); a container's
health check relies on both. Only with `connect` is the partner's server dialled, its host key
checked against the pins and the drop folder listed. Secrets are looked up by name; no value
is ever printed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.errors import ExchangeError
from exchange.secrets import LocalSecrets, SecretMissing, SecretStore
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.audit import Ledger
    from exchange.contract import Contract

MIN_KEY_BYTES = 32  # as exchange.transforms.MIN_KEY_BYTES, without importing pyarrow here
DISCLOSURE_KEY = "disclosure-key"  # as exchange.pipeline.context.DISCLOSURE_KEY
NEW_KEY = "$(openssl rand -base64 32)"


@dataclass(frozen=True)
class Finding:
    """One missing or unsafe prerequisite: what, where (a full path or a variable), why, fix."""

    what: str
    where: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} {self.where}: {self.problem}; fix: {self.fix}"


class NotReady(ExchangeError):
    """Prerequisites of a run are missing; `findings` lists every one (exit 1)."""

    label = "not ready"

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = tuple(findings)
        first = str(self.findings[0]) if self.findings else "not ready"
        more = len(self.findings) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))


def _private_file(what: str, path: Path, create: str) -> Iterator[Finding]:
    """A file that must exist and be readable by its owner only."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        yield Finding(what, str(path), "does not exist", create)
        return
    except OSError as exc:
        yield Finding(what, str(path), f"cannot be read ({exc.strerror})", f"check {path.parent}")
        return
    if not stat.S_ISREG(mode):
        yield Finding(what, str(path), "is not a regular file", f"replace it: {create}")
    elif mode & (stat.S_IRWXG | stat.S_IRWXO):
        yield Finding(what, str(path), "is readable by others", f"chmod 600 {path}")
    elif not os.access(path, os.R_OK):
        yield Finding(what, str(path), "cannot be read by this user", f"chown $(id -un) {path}")


def signing_key(settings: Settings) -> Iterator[Finding]:
    """The gateway's Ed25519 key, 0600 and loadable without a passphrase."""
    path = settings.signing_key
    create = f"exchange keys generate --kind signing --out {path}"
    problems = list(_private_file("signing key (EXCHANGE_SIGNING_KEY)", path, create))
    yield from problems
    if problems:
        return
    from exchange.crypto import signing

    try:
        signing.load_private_key(path)
    except ExchangeError as exc:
        yield Finding("signing key (EXCHANGE_SIGNING_KEY)", str(path), str(exc), create)


def secrets_file(settings: Settings) -> Iterator[Finding]:
    """The secrets file, if one is named: 0600 JSON."""
    path = settings.secrets_file
    if path is None:
        return
    create = f"umask 077 && printf '{{}}' > {path}"
    problems = list(_private_file("secrets file (EXCHANGE_SECRETS)", path, create))
    yield from problems
    if problems:
        return
    try:
        json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        yield Finding("secrets file (EXCHANGE_SECRETS)", str(path), "is not JSON", f"fix {path}")


def _where_to_set(settings: Settings, prefix: str, name: str, value: str) -> str:
    """How to set a secret: its variable, or its place in the secrets file."""
    variable = prefix + name.upper().replace("-", "_")
    section = "secrets" if prefix == "EXCHANGE_SECRET_" else "connections"
    if settings.secrets_file is None:
        return f"export {variable}={value} (or name a 0600 secrets file with EXCHANGE_SECRETS)"
    return f'add "{name}" to "{section}" in {settings.secrets_file}, or export {variable}={value}'


def secret(
    settings: Settings, store: SecretStore, name: str, what: str, *, key: bool = True
) -> Iterator[Finding]:
    """A named secret: present, base64, and (for a key) at least 32 bytes."""
    value = NEW_KEY if key else "$(base64 -w0 < FILE)"
    fix = _where_to_set(settings, "EXCHANGE_SECRET_", name, value)
    try:
        found = store.secret(name)
    except SecretMissing as exc:
        if (
            "readable by others" in str(exc)
            or "cannot be read" in str(exc)
            or "not JSON" in str(exc)
        ):
            return  # the secrets file's own finding says it
        problem = "is not valid base64" if "base64" in str(exc) else "is not configured"
        yield Finding(what, repr(name), problem, fix)
        return
    if key and len(found) < MIN_KEY_BYTES:
        yield Finding(what, repr(name), f"is shorter than {MIN_KEY_BYTES} bytes", fix)


def sftp(
    settings: Settings, store: SecretStore, contract: Contract, *, pins: bool = True
) -> Iterator[Finding]:
    """The contract's SFTP connection, its login key, and (with `pins`) a pinned host key for
    the server. A run leaves the pins to the transport: an unknown host key there is a
    security event, with its incident, not a set-up problem."""
    endpoint = contract.endpoint
    name = endpoint.connection
    shape = '\'{"host": ..., "port": 22, "username": ..., "key_file": ..., "known_hosts": ...}\''
    fix = _where_to_set(settings, "EXCHANGE_CONN_", name, shape)
    try:
        conn = store.sftp_connection(name)
    except SecretMissing as exc:
        if "secrets file" in str(exc):
            return
        said = str(exc)
        problem = "is not configured" if "is configured" in said else said.split(f"{name!r} ")[-1]
        yield Finding("SFTP connection", repr(name), problem, fix)
        return
    except ValueError:  # the variable is not JSON
        yield Finding("SFTP connection", repr(name), "is not a JSON object", fix)
        return
    key_fix = (
        f"exchange keys generate --kind ssh --out {conn.key_file} and give the partner "
        f"{conn.key_file}.pub"
    )
    yield from _private_file(f"SFTP login key of {name!r}", conn.key_file.absolute(), key_fix)
    if not pins:
        return
    host = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
    scan = f"ssh-keyscan -p {conn.port} {conn.host}"
    if conn.known_hosts is not None:
        path = conn.known_hosts.absolute()
        if not path.is_file():
            yield Finding(
                f"known_hosts of {name!r}",
                str(path),
                "does not exist",
                f"{scan} >> {path}, then confirm the fingerprint with the partner",
            )
        elif not _has_host(path, host):
            yield Finding(
                f"known_hosts of {name!r}",
                str(path),
                f"has no entry for {host}",
                f"{scan} >> {path}, then confirm the fingerprint with the partner",
            )
    elif not endpoint.host_keys:
        yield Finding(
            "partner host key",
            str(contract.path),
            f"the contract pins no host key for {host} and connection {name!r} names no "
            "known_hosts file",
            f"get the key from the partner (or {scan}, confirming its fingerprint with them) "
            "and add it to hostKeys in the contract's servers entry",
        )


def _has_host(path: Path, host: str) -> bool:
    """Whether a known_hosts file has a line for the host (hashed names included)."""
    from exchange.transport.sftp import paramiko  # as the delivery imports it (no `invoke`)

    try:
        return bool(paramiko.HostKeys(str(path)).lookup(host))
    except (OSError, paramiko.SSHException):
        return False


def source(settings: Settings, contract: Contract | None, given: str | None) -> Iterator[Finding]:
    """The source: a file in the source folder, or a named database connection."""
    if given is not None and given.startswith("postgres:"):
        name = given.removeprefix("postgres:")
        store = LocalSecrets.from_settings(settings)
        try:
            store.database_connection(name)
        except (SecretMissing, ValueError):
            shape = '\'{"url": "postgresql://host/db", "password": ...}\''
            fix = _where_to_set(settings, "EXCHANGE_CONN_", name, shape)
            yield Finding("database connection", repr(name), "is not configured", fix)
        return
    if given is not None and "://" in given:
        return  # refused by the run itself, with the reason
    folder = settings.source_dir
    if folder is None:
        yield Finding(
            "source folder",
            "EXCHANGE_SOURCE_DIR",
            "is not set: sources are read only from there",
            "export EXCHANGE_SOURCE_DIR=/full/path/to/the/exports",
        )
        return
    folder = folder.absolute()
    if not folder.is_dir():
        yield Finding(
            "source folder (EXCHANGE_SOURCE_DIR)",
            str(folder),
            "does not exist",
            f"mkdir -p {folder}",
        )
        return
    if contract is None:
        return
    name = contract.source_name
    if given is None:
        if name and not any(folder.glob(f"{name}.*")):
            yield Finding(
                "source file",
                str(folder / f"{name}.csv"),
                f"no file named {name}.* (the contract's physicalName) is in the source folder",
                f"put the export in {folder}, or give --source FILE",
            )
        return
    path = Path(given) if Path(given).is_absolute() else folder / given
    if path.resolve().is_relative_to(folder.resolve()) and not path.is_file():
        yield Finding(
            "source file", str(path), "does not exist", f"put the export at {path}, or fix --source"
        )


def preflight(
    settings: Settings,
    contract: Contract,
    source_arg: str | None = None,
    *,
    store: SecretStore | None = None,
    check_source: bool = True,
) -> list[Finding]:
    """The fast local checks `exchange run` makes before reading any data: the signing key,
    the secrets file, each secret the contract needs, its SFTP connection and login key, and
    the source (the host-key pins are left to the transport; `doctor` checks them too)."""
    store = store or LocalSecrets.from_settings(settings)
    found = [*signing_key(settings), *secrets_file(settings)]
    found += contract_secrets(settings, store, contract)
    found += sftp(settings, store, contract, pins=False)
    if check_source:
        found += source(settings, contract, source_arg)
    return found


def contract_secrets(settings: Settings, store: SecretStore, contract: Contract) -> list[Finding]:
    """The pseudonymisation key, the disclosure key and the objection list a run reads."""
    found: list[Finding] = []
    if contract.pseudonymisation_key:
        found += secret(settings, store, contract.pseudonymisation_key, "pseudonymisation key")
    found += secret(settings, store, DISCLOSURE_KEY, "disclosure ledger key")
    if contract.objections.list:
        found += secret(settings, store, contract.objections.list, "objection list", key=False)
    return found


# -- the rest of `exchange doctor`: what the run's own checks would refuse, audited ------------


def home(settings: Settings) -> Iterator[Finding]:
    """The state folder: creatable, or a folder this user can write."""
    path = settings.home
    if path.is_symlink():  # the gateway refuses to write through one
        yield Finding(
            "home (EXCHANGE_HOME)",
            str(path),
            "is a symbolic link",
            f"point EXCHANGE_HOME at the real folder ({path.resolve()})",
        )
    elif path.exists() and not path.is_dir():
        yield Finding("home (EXCHANGE_HOME)", str(path), "is not a folder", f"rm {path}")
    elif path.exists() and not os.access(path, os.W_OK | os.X_OK):
        yield Finding(
            "home (EXCHANGE_HOME)",
            str(path),
            "is not writable by this user",
            f"chown -R $(id -un) {path}",
        )
    elif not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK | os.X_OK):
            yield Finding(
                "home (EXCHANGE_HOME)", str(path), "cannot be created", f"mkdir -p -m 700 {path}"
            )


def ledger(settings: Settings) -> Iterator[Finding]:
    """The audit ledger: a SQLite file that can be made or written, or a database that answers."""
    url = settings.audit_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).absolute()
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            yield Finding(
                "audit ledger", str(path), "is not writable by this user", f"chown $(id -un) {path}"
            )
        elif not path.exists():
            parent = next((p for p in path.parents if p.exists()), None)
            if parent is None or not os.access(parent, os.W_OK | os.X_OK):
                yield Finding(
                    "audit ledger", str(path), "cannot be created", f"mkdir -p -m 700 {path.parent}"
                )
        return
    import sqlalchemy as sa

    from exchange.cli.auditors import ledger_name

    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # any driver's failure to connect; its text may hold the URL
        yield Finding(
            "audit ledger (EXCHANGE_AUDIT_URL)",
            ledger_name(url),
            f"cannot be reached ({type(exc).__name__})",
            "check the database is up and EXCHANGE_AUDIT_URL is right",
        )


def staging_store(settings: Settings) -> Iterator[Finding]:
    """The shared staging store, if EXCHANGE_STAGING names one: usable here and reachable."""
    if settings.staging_url is None:
        return
    from exchange.pipeline.store import StagingStore

    try:
        StagingStore.open(settings.staging_url).check()
    except ExchangeError as exc:  # InvalidRequest or StagingUnavailable, naming no secret
        said = str(exc)
        fix = said.split(": ", 1)[1] if said.startswith("staging store ") else said
        yield Finding(
            "staging store (EXCHANGE_STAGING)",
            settings.staging_url,
            "cannot be used",
            fix,
        )


def approvers(settings: Settings) -> Iterator[Finding]:
    """The trusted approvers file: present, safe and well formed, naming someone."""
    from exchange.trust import TrustError, load_trust

    path = settings.approvers
    try:
        trust = load_trust(path, contracts=settings.contracts)
    except TrustError as exc:
        said = str(exc)
        if "no trusted approvers file" in said:
            yield Finding(
                "trusted approvers file (EXCHANGE_APPROVERS)",
                str(path),
                "does not exist",
                f"have the operator write it (docs/operators.md, 'Trusted approvers') and run "
                f"install -m 644 approvers.json {path}, or export EXCHANGE_APPROVERS=/full/path",
            )
        elif "fix with: " in said:
            yield Finding(
                "trusted approvers file (EXCHANGE_APPROVERS)",
                str(path),
                said.split(": ", 1)[1].split("; fix with: ")[0],
                said.split("fix with: ", 1)[1],
            )
        else:
            yield Finding(
                "trusted approvers file (EXCHANGE_APPROVERS)",
                str(path),
                said.removeprefix(f"trusted approvers file {path}").lstrip(": "),
                "correct it as docs/operators.md ('Trusted approvers') shows",
            )
        return
    if not trust.approvers:
        yield Finding(
            "trusted approvers file (EXCHANGE_APPROVERS)",
            str(path),
            "lists no approver that is not revoked",
            "add the IG officers' public keys (docs/operators.md, 'Trusted approvers')",
        )


def contracts_folder(settings: Settings) -> Iterator[Finding]:
    """The only folder contracts run from."""
    path = settings.contracts
    if not path.is_dir():
        yield Finding(
            "contracts folder (EXCHANGE_CONTRACTS)",
            str(path),
            "does not exist",
            f"mkdir -p {path}, or export EXCHANGE_CONTRACTS=/full/path/to/contracts",
        )


# What a data team does about each refusal of the governance check.
APPROVAL_FIXES = {
    "not-active": "when the agreement is final, set status: active in {path}, then have it "
    "approved",
    "not-approved": "ask an IG officer to review it and run: exchange contract approve {path} "
    "--key OFFICER.key",
    "changed-since-approval": "ask an IG officer to review the change (exchange contract diff) "
    "and approve it again: exchange contract approve {path} --key OFFICER.key",
    "review-overdue": "ask an IG officer to review the agreement and approve it again",
    "suspended": "only the IG officer's signed resume lifts it: exchange contract resume {path} "
    "--key OFFICER.key",
}


def contract_checks(
    settings: Settings, given: str, source_arg: str | None, today: dt.date
) -> tuple[Contract | None, list[Finding]]:
    """The contract: in the contracts folder, valid, and approved to run today."""
    from exchange.approval import Governance
    from exchange.contract import load_contract
    from exchange.errors import ContractError, NotRunnable
    from exchange.pipeline.check import contract_file

    found: list[Finding] = []
    try:
        path = contract_file(settings, given)
    except NotRunnable:
        path = Path(given).absolute()
        found.append(
            Finding(
                "contract",
                str(path),
                f"is not in the contracts folder {settings.contracts}: contracts run only from "
                "there",
                f"cp {path} {settings.contracts}/",
            )
        )
    except ContractError:
        path = Path(given).absolute()
        found.append(Finding("contract", str(path), "does not exist", "check the name"))
        return None, found
    try:
        contract = load_contract(path)
    except ContractError as exc:
        found.append(
            Finding(
                "contract",
                str(path),
                f"is invalid ({len(exc.problems)} problem(s))",
                f"exchange contract lint {path}",
            )
        )
        return None, found
    from exchange.trust import TrustError, load_trust

    try:
        trust = load_trust(settings.approvers, contracts=settings.contracts)
    except TrustError:
        trust = None  # the approvers file's own finding says why
    if trust is not None:
        ledger = _existing_ledger(settings)
        try:
            Governance(trust, ledger, settings.contracts).check(contract, today)
        except NotRunnable as exc:
            reason = getattr(exc, "reason", "")
            fix = APPROVAL_FIXES.get(reason, "ask an IG officer (docs/ig-officers.md)")
            found.append(Finding("contract", str(path), str(exc), fix.format(path=path)))
        finally:
            ledger.close()
    return contract, found


def _existing_ledger(settings: Settings) -> Ledger:
    """The ledger for reading suspensions, without creating one: an empty in-memory ledger
    stands in for a SQLite file that does not exist yet (it can hold no suspension)."""
    from exchange.audit import Ledger

    url = settings.audit_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return Ledger("sqlite://")
    return Ledger(url)


def connect_checks(settings: Settings, contract: Contract) -> Iterator[Finding]:
    """Dial the partner: host key against the pins, login, and the drop folder listed."""
    from exchange.transport.registry import open_transport

    endpoint = contract.endpoint
    try:
        transport = open_transport(endpoint, LocalSecrets.from_settings(settings))
        with transport.connect() as remote:
            remote.list(endpoint.folder)
    except ExchangeError as exc:
        yield Finding(
            "partner server",
            f"(connection {endpoint.connection!r}, folder {endpoint.folder})",
            str(exc),
            "check the connection and the folder with the partner",
        )


def doctor(
    settings: Settings,
    contract: str | None = None,
    *,
    source_arg: str | None = None,
    connect: bool = False,
    today: dt.date | None = None,
) -> list[Finding]:
    """Every missing prerequisite: the gateway's own, then the contract's (if one is named)."""
    today = today or dt.datetime.now(dt.UTC).date()
    found = [
        *home(settings),
        *ledger(settings),
        *staging_store(settings),
        *signing_key(settings),
        *secrets_file(settings),
        *approvers(settings),
        *contracts_folder(settings),
    ]
    if contract is None:
        return found + list(source(settings, None, None))
    loaded, problems = contract_checks(settings, contract, source_arg, today)
    found += problems
    if loaded is None:
        return found
    store = LocalSecrets.from_settings(settings)
    found += contract_secrets(settings, store, loaded)
    pinned = list(sftp(settings, store, loaded))
    found += pinned
    found += source(settings, loaded, source_arg)
    if connect and not pinned:
        found += connect_checks(settings, loaded)
    return found
