"""Fixtures of the audit tests: a gateway signing key, and ledger databases on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pg import PrivatePostgres

from exchange.audit import Entry, Ledger

ORIGIN = "gateway.example.org/audit"


@pytest.fixture(scope="session")
def gateway_key() -> Ed25519PrivateKey:
    """The gateway's Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def public_key_file(tmp_path: Path, gateway_key: Ed25519PrivateKey) -> Path:
    """The gateway's public key as an OpenSSH line, as an auditor receives it."""
    line = gateway_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path = tmp_path / "gateway.pub"
    path.write_text(line.decode() + " gateway\n")
    return path


def new_pg_database(server: PrivatePostgres) -> str:
    """A fresh, empty database on the private server; its SQLAlchemy URL."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name}")
    return server.url(database=name)


def drop_pg_database(server: PrivatePostgres, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(postgres: PrivatePostgres) -> Iterator[str]:
    """A database of its own on the session's private PostgreSQL server, dropped afterwards."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[postgres]')")
    url = new_pg_database(postgres)
    yield url
    drop_pg_database(postgres, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger database URL on each backend (a real file; a real server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("pg_url"))


def counting(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of every entry read from the database from now on."""
    read: list[int] = []
    original = ledger.store.entries

    def entries(**kwargs: Any) -> Iterator[Entry]:
        for entry in original(**kwargs):
            read.append(entry.seq)
            yield entry

    monkeypatch.setattr(ledger.store, "entries", entries)
    return read
