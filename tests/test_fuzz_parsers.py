"""Fuzzing the partner's parsers (issue 10): the manifest, acknowledgements and `receive`.

Hypothesis drives each parser with hostile input for a bounded budget (a few seconds in the
default run). Whatever comes in, the result is the parsed value or one clear one-line refusal:
never another exception, never a file written outside `--out`, never data written on refusal.
Every crash these found is pinned below as a plain regression test.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_receive_hostile import (
    DROP_ID,
    Parties,
    encrypt,
    make_parties,
    manifest_for,
    plaintext,
    sign_manifest,
    snapshot,
)

from exchange import acks, cli, manifest
from exchange.crypto import signing

# A few seconds by default; EXCHANGE_FUZZ_EXAMPLES raises the budget for a longer hunt.
FUZZ = settings(
    max_examples=int(os.environ.get("EXCHANGE_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        ".",
        "..",
        "../x",
        "/etc/passwd",
        "a/b",
        "a\0b",
        "x\n",
        "x-0123456789abcdef\n",
        ".hidden-0123456789abcdef",
        "a" * 300,
        "data.csv.age",
        "../data.csv.age",
        "\u202eevil",
        "\x1b[31mred",
        "\ud800",
        "csv",
        "parquet",
        "CSV",
    ]
) | st.text(max_size=40)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=16,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value: object keys and list indexes."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield (*prefix, i)
            yield from paths(inner, (*prefix, i))


def mutate(body: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    """A copy of `body` with the value at `path` replaced (or removed)."""
    body = copy.deepcopy(body)
    parent: Any = body
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


def hostile_bytes(body: dict[str, Any]) -> bytes:
    """A manifest as a hostile sender may write it: any string, lone surrogates escaped."""
    return (json.dumps(body, sort_keys=True, indent=2) + "\n").encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Parties, bytes, dict[str, Any]]:
    """Real keys, one valid ciphertext and its manifest, made once for every example."""
    parties = make_parties(tmp_path_factory.mktemp("fuzz-keys"))
    ciphertext = encrypt(plaintext("csv", 3), parties.recipient)
    return parties, ciphertext, manifest_for(parties, ciphertext, fmt="csv", rows=3)


def one_line(message: str) -> None:
    assert message and "\n" not in message.rstrip("\n"), message
    assert not any(ord(c) < 32 for c in message.rstrip("\n")), repr(message)
    assert len(message) < 400, message


def check_manifest(data: bytes) -> None:
    try:
        body = manifest.from_bytes(data)
    except manifest.ManifestError as exc:
        one_line(str(exc))
        return
    assert manifest.is_safe_id(body["drop_id"])
    assert body["payload"]["name"] == manifest.payload_name(body["payload"]["format"])


# -- the manifest parser ---------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_manifest_bytes(data: bytes) -> None:
    check_manifest(data)


@FUZZ
@given(JSON)
def test_fuzz_manifest_any_json(value: Any) -> None:
    check_manifest(json.dumps(value).encode())


@FUZZ
@given(st.data())
def test_fuzz_manifest_mutations(world: Any, data: st.DataObject) -> None:
    _, _, body = world
    path = data.draw(st.sampled_from(list(paths(body))))
    changed = mutate(body, path, data.draw(JSON), data.draw(st.booleans()))
    check_manifest(hostile_bytes(changed))


# -- the acknowledgement parser --------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000), HOSTILE_TEXT)
def test_fuzz_ack_bytes(data: bytes, name: str) -> None:
    found = acks.verify(name, data, {})
    assert isinstance(found, acks.RejectedAck)
    one_line(found.reason)


@FUZZ
@given(st.data())
def test_fuzz_signed_ack_mutations(world: Any, data: st.DataObject) -> None:
    parties, _, body = world
    key = signing.load_private_key(parties.ack_key)
    kid = signing.key_id(key.public_key())
    ack = acks.build(body, "ef" * 32, rows=3, received_at="2026-11-24T09:30:00+00:00", key_id=kid)
    path = data.draw(st.sampled_from(list(paths(ack))))
    changed = mutate(ack, path, data.draw(JSON), data.draw(st.booleans()))
    try:
        signed = acks.sign(changed, key)
    except (ValueError, RecursionError):
        return  # not signable (a lone surrogate): a partner could not have sent it
    name = data.draw(st.sampled_from([acks.ack_name(DROP_ID)]) | HOSTILE_TEXT)
    found = acks.verify(name, signed, {kid: key.public_key()})
    if isinstance(found, acks.Ack):
        assert manifest.is_safe_id(found.drop_id) and name == acks.ack_name(found.drop_id)
        assert type(found.rows) is int and found.rows >= 0
    else:
        one_line(found.reason)


# -- receive, through the command -------------------------------------------------------------


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-receive-") as root:
        yield Path(root)


def run_receive(parties: Parties, drop: Path, out: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(
            [
                "receive",
                str(drop),
                "--identity",
                str(parties.identity),
                "--sender-key",
                str(parties.sender_public),
                "--out",
                str(out),
            ]
        )
    return code, err.getvalue()


def check_received(code: int, err: str, root: Path, before: dict[str, Any], drop_id: Any) -> None:
    out = root / "out"
    outside = {k: v for k, v in snapshot(root).items() if not k.startswith(str(out))}
    assert outside == before  # nothing outside --out changed, whatever the outcome
    written = [] if not out.exists() else sorted(p.name for p in out.iterdir())
    data = [n for n in written if n not in {".received.lock", ".received.json"}]
    if code == cli.OK:
        assert manifest.is_safe_id(drop_id) and len(data) == 1
        assert data[0].startswith(f"{drop_id}.")
        return
    assert code == cli.NOT_VERIFIED, err
    one_line(err)
    assert data == []


@FUZZ
@given(st.data())
def test_fuzz_receive_signed_hostile_manifest(world: Any, data: st.DataObject) -> None:
    parties, ciphertext, body = world
    path = data.draw(st.sampled_from(list(paths(body))))
    changed = mutate(body, path, data.draw(JSON), data.draw(st.booleans()))
    with sandbox() as root:
        drop = root / "inbox" / "drop"
        drop.mkdir(parents=True)
        (drop / "data.csv.age").write_bytes(ciphertext)
        sign_manifest(parties, drop, hostile_bytes(changed))
        before = snapshot(root)
        code, err = run_receive(parties, drop, root / "out")
        check_received(code, err, root, before, changed.get("drop_id"))


@FUZZ
@given(st.sampled_from(manifest.FORMATS), st.binary(max_size=600), st.integers(0, 5))
def test_fuzz_receive_hostile_decrypted_data(
    world: Any, fmt: str, content: bytes, rows: int
) -> None:
    parties, _, _ = world
    ciphertext = encrypt(content, parties.recipient)
    body = manifest_for(parties, ciphertext, fmt=fmt, rows=rows)
    with sandbox() as root:
        drop = root / "inbox" / DROP_ID
        drop.mkdir(parents=True)
        (drop / manifest.payload_name(fmt)).write_bytes(ciphertext)
        sign_manifest(parties, drop, manifest.to_bytes(body))
        before = snapshot(root)
        code, err = run_receive(parties, drop, root / "out")
        check_received(code, err, root, before, DROP_ID)


# -- crashes the fuzzing found, pinned ---------------------------------------------------------


def test_regression_deep_nesting_is_a_manifest_error_not_a_recursion_error() -> None:
    with pytest.raises(manifest.ManifestError, match="nested too deeply"):
        manifest.from_bytes(b"[" * 100_000 + b"]" * 100_000)


def test_regression_deeply_nested_ack_is_rejected_not_raised() -> None:
    found = acks.verify("x.ack.json", b'{"body":' * 20_000 + b"1" + b"}" * 20_000, {})
    assert isinstance(found, acks.RejectedAck)


def test_regression_nan_and_huge_integers_are_refused() -> None:
    for data in (b'{"manifest_version": NaN}', b'{"a": ' + b"9" * 5000 + b"}"):
        with pytest.raises(manifest.ManifestError):
            manifest.from_bytes(data)


def test_regression_a_lone_surrogate_in_a_signed_ack_is_rejected(world: Any) -> None:
    parties, _, _ = world
    key = signing.load_private_key(parties.ack_key)
    kid = signing.key_id(key.public_key())
    data = json.dumps({"body": {"type": acks.ACK_VERSION, "key_id": kid}, "signature": "\ud800"})
    found = acks.verify("x.ack.json", data.encode(), {kid: key.public_key()})
    assert isinstance(found, acks.RejectedAck)


def test_regression_hostile_key_id_is_not_repeated() -> None:
    body = {"type": acks.ACK_VERSION, "key_id": "ed25519:x\n\x1b[2Jforged log line"}
    data = json.dumps({"body": body, "signature": "AA=="}).encode()
    found = acks.verify("x.ack.json", data, {})
    assert isinstance(found, acks.RejectedAck) and "\x1b" not in found.reason
    assert "forged" not in found.reason


def test_regression_a_boolean_row_count_is_not_a_row_count(world: Any) -> None:
    parties, _, body = world
    key = signing.load_private_key(parties.ack_key)
    kid = signing.key_id(key.public_key())
    ack = acks.build(body, "ef" * 32, rows=3, received_at="2026-11-24T09:30:00+00:00", key_id=kid)
    ack["rows"] = True
    found = acks.verify(acks.ack_name(DROP_ID), acks.sign(ack, key), {kid: key.public_key()})
    assert isinstance(found, acks.RejectedAck)


def test_regression_the_drop_folder_missing_is_one_line(world: Any, tmp_path: Path) -> None:
    parties, _, _ = world
    code, err = run_receive(parties, tmp_path / "no-such-drop", tmp_path / "out")
    assert code == cli.NOT_VERIFIED and "not a readable folder" in err
    one_line(err)


def test_packaged_schema_is_the_documented_one() -> None:
    docs = Path(__file__).parents[1] / "docs" / "manifest.schema.json"
    assert json.loads(docs.read_text()) == manifest.schema()


def test_payload_names_and_formats_are_the_gateways() -> None:
    from exchange import payload
    from exchange.contract import load
    from exchange.crypto import age

    assert set(manifest.FORMATS) == set(payload.SUFFIXES) == set(load.PAYLOAD_FORMATS)
    gateway = {f: f"data{payload.SUFFIXES[f]}{age.SUFFIX}" for f in payload.SUFFIXES}
    assert {f: manifest.payload_name(f) for f in manifest.FORMATS} == gateway
    payload_schema = manifest.schema()["properties"]["payload"]["properties"]
    assert sorted(payload_schema["name"]["enum"]) == sorted(gateway.values())
    assert sorted(payload_schema["format"]["enum"]) == sorted(gateway)
