"""The public register of agreements: an index page, a page per agreement, and register.json.

Everything written is public by design (mode 0644) and built from `exchange.contract.render`,
which never shows a secret's or a connection's name, nor more of a key than its fingerprint.
A contract that fails to load is listed as invalid with its file name and the number of
problems only: problem messages can quote file paths. Drafts are not listed (nor counted), and
statuses are plain English: a suspension's internal reason is never published, only who (by
role) suspended the agreement and when.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from exchange.approval import Governance
from exchange.contract import Contract, Party, load_contract
from exchange.contract.render import (
    approval_summary,
    code_html,
    escape,
    other_terms,
    page,
    party_code_text,
    rights_contact,
    state_badge,
    table,
    to_html,
    to_markdown,
)
from exchange.contract.vocabulary import PURPOSES
from exchange.contract.vocabulary.terms import TERMS
from exchange.errors import ContractError, ExchangeError
from exchange.settings import Settings

REGISTER_TYPE: Final = "exchange-register/1"
INDEX: Final = "index.html"
REGISTER: Final = "register.json"
GATEWAY_KEY: Final = "gateway.key.pub"
_RESERVED: Final = frozenset({"index", "register"})
PUBLISHER: Final = "the organisation sharing the data (the provider) named on each agreement"


def page_stem(contract_id: str) -> str:
    """A safe file name stem for an agreement's pages (never a path, never the index's name)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", contract_id).lstrip(".")
    return f"agreement-{stem}" if not stem or stem.lower() in _RESERVED else stem


def write_public(path: Path, text: str) -> None:
    """Write a public file (0644) atomically, so a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, "utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, path)


def write_agreement(
    contract: Contract,
    out: Path,
    *,
    today: dt.date,
    back_link: str | None = None,
    governance: Governance | None = None,
) -> tuple[Path, Path]:
    """Write one agreement's HTML and Markdown pages (0644) into `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = page_stem(contract.id)
    html_path, md_path = out / f"{stem}.html", out / f"{stem}.md"
    page = to_html(contract, today=today, back_link=back_link, governance=governance)
    write_public(html_path, page)
    write_public(md_path, to_markdown(contract, today=today, governance=governance))
    return html_path, md_path


def _party(party: Party) -> str:
    text = party.organisation + (f", {party.department}" if party.department else "")
    code = party.code
    shown = party_code_text({"scheme": code.scheme, "value": code.value}) if code else ""
    return text + (f" ({shown})" if shown else "")


def _code(party: Party) -> dict[str, str] | None:
    return {"scheme": party.code.scheme, "value": party.code.value} if party.code else None


def _basis_wording(contract: Contract) -> list[str]:
    """The agreement's own words for each part of its legal basis that gives them, verbatim."""
    basis, out = contract.legal_basis, []
    for statute in basis.statutes:
        own = " ".join(p for p in (statute.title, statute.wording) if p)
        if own:
            out.append(f"{statute}: {' '.join(own.split())}")
    for condition in basis.article9_conditions:
        if condition.wording:
            out.append(f"UK GDPR Art {condition.code}: {' '.join(condition.wording.split())}")
    for condition in basis.schedule1_conditions:
        if condition.wording:
            out.append(f"DPA 2018 Sch 1 {condition.code}: {' '.join(condition.wording.split())}")
    return out


def _entry(
    contract: Contract,
    stem: str,
    today: dt.date,
    generated_at: str,
    governance: Governance | None,
) -> dict[str, Any]:
    state = approval_summary(contract, today, governance)
    return {
        "file": contract.path.name,
        "id": contract.id,
        "name": contract.name,
        "version": contract.version,
        "sha256": contract.sha256,
        "status": contract.status,
        "public_status": state["public_status"],
        "approval": {
            "state": state["reason"],
            "label": state["label"],
            "status": state["public_status"],
            "runnable": state["runnable"],
            "approved_by": state["approved_by"],
            "approved_at": state["approved_at"],
            "review_by": state["review_by"],
            "detail": None if state["runnable"] else state["public_message"],
        },
        "publisher": contract.provider.organisation,
        "rights_requests_contact": rights_contact(contract) or None,
        "parties": {
            "provider": _party(contract.provider),
            "recipient": _party(contract.recipient),
            "provider_code": _code(contract.provider),
            "recipient_code": _code(contract.recipient),
        },
        "purposes": list(contract.purposes),
        "legal_basis": contract.legal_basis.summary(),
        "legal_basis_wording": _basis_wording(contract),
        "review_date": state["review_by"] or contract.review_date.isoformat(),
        "terms": [t["words"] for t in other_terms(contract) if TERMS[t["term"]].register],
        "pages": {"html": f"{stem}.html", "markdown": f"{stem}.md"},
        "generated_at": generated_at,
    }


def _invalid(file: str, problems: int, generated_at: str, why: str) -> dict[str, Any]:
    return {
        "file": file,
        "status": "invalid",
        "problems": problems,
        "why": why,
        "pages": None,
        "generated_at": generated_at,
    }


def build_register(
    folder: Path,
    out: Path,
    *,
    today: dt.date,
    governance: Governance | None = None,
    publisher: str | None = None,
    gateway_key: Path | None = None,
) -> list[dict[str, Any]]:
    """Write the register of every *.yaml contract in `folder` into `out`; return its entries.

    Drafts are left out (no entry, no page, no count). Approvals are judged by `governance`,
    by default the gateway's configured trust anchor. `publisher` names who publishes the
    register; by default, the provider named on each agreement. `gateway_key`, the gateway's
    public signing key, is published with its id so anyone can check a drop's or a checkpoint's
    signature against the key the register names. Raises CryptoError for an unusable key."""
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such contracts folder", str(folder))
    if governance is None:
        try:
            governance = Governance.from_settings(Settings.from_env())
        except ExchangeError:
            governance = None  # each entry then says why its approval cannot be checked
    signer = _gateway_key(gateway_key) if gateway_key is not None else None
    out.mkdir(parents=True, exist_ok=True)
    generated_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    previous = _previous_pages(out)
    entries: list[dict[str, Any]] = []
    stems: dict[str, str] = {}  # page stem -> the file that took it
    for path in sorted(folder.glob("*.yaml")):
        try:
            contract = load_contract(path)
        except ContractError as exc:
            why = "the contract does not load: exchange contract lint lists the problems"
            entries.append(_invalid(path.name, len(exc.problems), generated_at, why))
            continue
        except UnicodeDecodeError:  # read_document reports only OSError as a ContractError
            entries.append(_invalid(path.name, 1, generated_at, "the file is not UTF-8 text"))
            continue
        if contract.status == "draft":  # not yet an agreement: nothing about it is published
            continue
        stem = page_stem(contract.id)
        if stem in stems:
            why = f"its id gives the same page as {stems[stem]}: agreement ids must be unique"
            entries.append(_invalid(path.name, 1, generated_at, why))
            continue
        stems[stem] = path.name
        write_agreement(contract, out, today=today, back_link=INDEX, governance=governance)
        entries.append(_entry(contract, stem, today, generated_at, governance))
    written = {f"{stem}.{suffix}" for stem in stems for suffix in ("html", "md")}
    for name in previous - written:  # pages of agreements no longer in the folder
        (out / name).unlink(missing_ok=True)
    register = {
        "type": REGISTER_TYPE,
        "generated_at": generated_at,
        "as_of": today.isoformat(),
        "publisher": publisher or PUBLISHER,
        "counts": _counts(entries),
        "gateway_key": signer,
        "agreements": entries,
    }
    if signer is not None:
        write_public(out / GATEWAY_KEY, signer["openssh"] + "\n")
    write_public(out / REGISTER, json.dumps(register, indent=2, ensure_ascii=False) + "\n")
    index = index_html(
        entries, today=today, generated_at=generated_at, publisher=publisher, gateway_key=signer
    )
    write_public(out / INDEX, index)
    return entries


def _gateway_key(path: Path) -> dict[str, str]:
    """The gateway's public signing key as published: its id and its OpenSSH line."""
    from cryptography.hazmat.primitives import serialization

    from exchange.crypto.signing import key_id, load_public_key

    key = load_public_key(path)
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"id": key_id(key), "openssh": line.decode("ascii"), "file": GATEWAY_KEY}


def _counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    invalid = sum(e["status"] == "invalid" for e in entries)
    runnable = sum(bool(e.get("approval", {}).get("runnable")) for e in entries)
    return {
        "agreements": len(entries),
        "runnable": runnable,
        "not_runnable": len(entries) - invalid - runnable,
        "invalid": invalid,
    }


def _previous_pages(out: Path) -> set[str]:
    """Page names a previous register listed (plain names in `out` only), to clear stale ones."""
    try:
        old = json.loads((out / REGISTER).read_text("utf-8"))
        names = [
            name
            for entry in old["agreements"]
            if isinstance(entry, dict) and isinstance(entry.get("pages"), dict)
            for name in entry["pages"].values()
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    safe = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.(?:html|md)")  # whole: no final line break
    return {n for n in names if isinstance(n, str) and safe.fullmatch(n) and n != INDEX}


def index_html(
    entries: list[dict[str, Any]],
    *,
    today: dt.date,
    generated_at: str,
    publisher: str | None = None,
    gateway_key: dict[str, str] | None = None,
) -> str:
    """The register's index page: one row per agreement, invalid files included.

    The status comes second, so a phone shows it without scrolling the table sideways."""
    rows = []
    for e in entries:
        if e["status"] == "invalid":
            rows.append(
                [
                    code_html(e["file"]),
                    state_badge("invalid", "Invalid")
                    + f" {e['problems']} problem{'s' if e['problems'] != 1 else ''}: "
                    + escape(e["why"]),
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                ]
            )
            continue
        a = e["approval"]
        state = state_badge(a["state"], e["public_status"].capitalize())
        if a["runnable"]:
            state += f"<br>by {escape(a['approved_by'])} on {escape((a['approved_at'] or '')[:10])}"
        else:
            state += f"<br>{escape(a['detail'])}"
        href = quote(e["pages"]["html"])
        rows.append(
            [
                f'<a href="{escape(href)}">{escape(e["name"])}</a><br>'
                f"{code_html(e['id'])} v{escape(e['version'])}",
                state,
                escape(e["parties"]["provider"]),
                escape(e["parties"]["recipient"]),
                '<ul class="plain">'
                + "".join(f"<li>{escape(PURPOSES.get(p, p))}</li>" for p in e["purposes"])
                + "</ul>",
                escape(e["legal_basis"])
                + "".join(f"<br>{escape(w)}" for w in e.get("legal_basis_wording") or ()),
                escape(e["rights_requests_contact"]),
                f'<time class="nowrap" datetime="{escape(e["review_date"])}">'
                f"{escape(e['review_date'])}</time>",
            ]
        )
    counts = _counts(entries)
    body = (
        f"<p>Published by {escape(publisher or PUBLISHER)}. "
        f"{counts['agreements']} agreements: {counts['runnable']} approved and runnable, "
        f"{counts['not_runnable']} not runnable, {counts['invalid']} invalid. Status as of "
        f"{escape(today.isoformat())}. Each agreement's page says in full what is shared, why, "
        f'under which law and with what safeguards; <a href="{REGISTER}">register.json</a> '
        "is the same index for machines. Draft agreements are not listed; a suspension is shown "
        "with its date only, not the internal reason. To exercise your data protection rights, "
        "use the agreement's rights-requests contact.</p>"
        + (
            f"<p>Every drop's manifest and the audit log's checkpoints are signed by the gateway's "
            f"key {code_html(gateway_key['id'])}, published here as "
            f'<a href="{escape(gateway_key["file"])}">{escape(gateway_key["file"])}</a>: '
            f"{code_html(gateway_key['openssh'])}</p>"
            if gateway_key
            else ""
        )
        + table(
            "Data sharing agreements",
            [
                "Agreement",
                "Status",
                "Provider (publisher)",
                "Recipient",
                "Purposes",
                "Legal basis",
                "Rights requests",
                "Review by",
            ],
            rows,
            anchor="t-register",
            stack=True,
        )
    )
    return page(
        "Register of data sharing agreements",
        "Register of data sharing agreements",
        "Every agreement under which personal data is shared by the exchange gateway.",
        body,
        footer=f"Generated at {escape(generated_at)} by the exchange gateway.",
    )
