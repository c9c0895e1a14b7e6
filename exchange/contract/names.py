"""Names in a contract that become paths, file names or table names: each has a safe shape.

Contract authors propose agreements; they never choose where the gateway reads or writes. So an
id, a folder or a source name that could climb out of its folder (`..`, an absolute path, a NUL,
a control character, a glob) is refused at lint, before anything is approved or run. Messages
say what shape is expected and never repeat the offending value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import SplitResult, urlsplit

from exchange.contract.paths import custom_properties, format_path
from exchange.contract.safe_yaml import is_contract_id
from exchange.errors import Problem

CONTRACT_ID_RULE = "1-64 lower-case letters, digits and hyphens, starting with a letter or digit"

# One folder name on the partner's SFTP server: no '.', '..', hidden or home-relative names.
FOLDER_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_FOLDER_SEGMENTS = 16
FOLDER_RULE = (
    "folder names of letters, digits, '_', '.' and '-' (not starting with '.'), separated by "
    "single '/'; no '..', no absolute path, no control characters"
)

# A source file stem or a table ("table" or "schema.table").
SOURCE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})?")
SOURCE_NAME_RULE = (
    "a file stem or table name of letters, digits, '_' and '-' (optionally 'schema.table'); "
    "no '/', '..', spaces or glob characters"
)

HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\%\s]")


def folder_problem(folder: Any) -> str | None:
    """Why a relative remote folder is unsafe, or None."""
    if not isinstance(folder, str):
        return "must be text"
    if _CONTROL.search(folder):
        return f"must be {FOLDER_RULE} (found a space, control character, '\\' or '%')"
    parts = folder.removesuffix("/").split("/")
    if folder.startswith("/") or folder.startswith("~"):
        return f"must be relative to the SFTP login folder: {FOLDER_RULE}"
    if len(parts) > MAX_FOLDER_SEGMENTS:
        return f"more than {MAX_FOLDER_SEGMENTS} folder levels"
    if not all(FOLDER_SEGMENT.fullmatch(p) for p in parts):
        if any(p == ".." for p in parts):
            return f"must not climb out of the folder with '..': {FOLDER_RULE}"
        return f"must be {FOLDER_RULE}"
    return None


def _host_ok(url: SplitResult) -> bool:
    host = url.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and all(HOST_LABEL.fullmatch(p) for p in host.split("."))
    return True


def location_problems(location: Any) -> Iterator[tuple[str, str]]:
    """What is wrong with an `sftp://HOST/FOLDER` location: (sub-path, message)."""
    if not isinstance(location, str):
        yield "", "must be sftp://HOST/FOLDER"
        return
    if "*" in location or "{" in location:
        yield "", "must name a folder, not a pattern"
        return
    if re.search(r"[\x00-\x1f\x7f-\x9f\\\s]", location):
        # urlsplit silently drops tabs and newlines, which could hide a '..' in review.
        yield "", "must not contain spaces, control characters or '\\'"
        return
    try:
        url = urlsplit(location)
        url.port  # noqa: B018 - parsing the port is what raises for a bad one
    except ValueError:
        yield "", "must be sftp://HOST/FOLDER (not a valid URL)"
        return
    if url.scheme != "sftp" or not url.hostname or not url.path.strip("/"):
        yield "", "must be sftp://HOST/FOLDER"
        return
    if "@" in url.netloc:
        yield "", "must not carry a user or password: the named sftpConnection holds them"
    if url.query or url.fragment or "?" in location or "#" in location:
        yield "", "must not have a query or fragment ('?', '#')"
    if not _host_ok(url):
        yield "", "HOST must be a DNS name or IP address"
    problem = folder_problem(url.path.removeprefix("/"))
    if problem:
        yield "", f"FOLDER {problem}"


def name_problems(document: dict[str, Any], file: str) -> Iterator[Problem]:
    """Every id, folder and source name in the contract that is not of its safe shape."""
    if "id" in document and not is_contract_id(document["id"]):
        yield Problem(file, "id", f"must be {CONTRACT_ID_RULE} (it names files, folders and DAGs)")
    for i, server in enumerate(_list(document.get("servers"))):
        if isinstance(server, dict) and server.get("type") == "sftp":
            for sub, message in location_problems(server.get("location")):
                yield Problem(file, f"servers[{i}].location{sub}", message)
    schema = _list(document.get("schema"))
    for i, dataset in enumerate(schema):
        if not isinstance(dataset, dict):
            continue
        key = "physicalName" if "physicalName" in dataset else "name"
        source = dataset.get(key)
        if key in dataset and not (isinstance(source, str) and SOURCE_NAME.fullmatch(source)):
            hint = "" if key == "physicalName" else " (set physicalName to the source's name)"
            yield Problem(file, f"schema[{i}].{key}", f"must be {SOURCE_NAME_RULE}{hint}")
    custom = custom_properties(document.get("customProperties"))
    if "acknowledgements" in custom:
        index, acks = custom["acknowledgements"]
        if isinstance(acks, dict) and "folder" in acks:
            problem = folder_problem(acks["folder"])
            if problem:
                where = format_path(["customProperties", index, "value", "folder"])
                yield Problem(file, where, problem)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
