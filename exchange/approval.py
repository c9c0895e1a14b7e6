"""IG approval, suspension and the gate every run passes first.

An approval is a small signed JSON file beside the contract (`NAME.approval.json`) binding the
approver's key, the time, the review date and the SHA-256 of the contract's canonical form.
Trusted approvers' public keys are the `approvers/*.pub` files in the contracts folder; key ids
listed in `approvers/revoked.txt` are trusted no more. A suspension (`NAME.suspension.json`),
signed the same way, stops the agreement at once without deleting anything.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.contract import Contract
from exchange.contract.canonical import canonical_bytes
from exchange.crypto import signing
from exchange.errors import CryptoError, ExchangeError, NotRunnable

APPROVAL_TYPE = "exchange-approval/1"
SUSPENSION_TYPE = "exchange-suspension/1"
REVIEW_YEARS = 2  # the protocol reviews every agreement at least every two years


class ApprovalError(ExchangeError):
    """An approval or suspension cannot be made as asked."""


@dataclass(frozen=True)
class Approver:
    """A trusted IG officer's public key."""

    key_id: str
    name: str
    key: Ed25519PublicKey


@dataclass(frozen=True)
class Status:
    """Whether a contract may run today, and why not."""

    runnable: bool
    reason: str  # a code: ok, not-active, suspended, not-approved, ...
    message: str
    approver: str | None = None
    approved_at: str | None = None
    review_by: str | None = None


def approvers_dir(contract_path: Path) -> Path:
    """Where the trusted approvers' keys for a contract live."""
    return contract_path.parent / "approvers"


def approval_path(contract_path: Path) -> Path:
    """The approval file beside a contract."""
    return contract_path.with_name(f"{contract_path.stem}.approval.json")


def suspension_path(contract_path: Path) -> Path:
    """The suspension file beside a contract."""
    return contract_path.with_name(f"{contract_path.stem}.suspension.json")


def review_limit(day: dt.date) -> dt.date:
    """The latest review date an approval given on `day` may set."""
    try:
        return day.replace(year=day.year + REVIEW_YEARS)
    except ValueError:  # 29 February
        return day.replace(year=day.year + REVIEW_YEARS, day=28)


def revoked(folder: Path) -> set[str]:
    """Key ids listed as revoked (one per line; '#' starts a comment)."""
    path = folder / "revoked.txt"
    if not path.exists():
        return set()
    return {line.split("#")[0].strip() for line in path.read_text().splitlines()} - {""}


def trusted_approvers(folder: Path) -> dict[str, Approver]:
    """The approvers whose keys are in the folder and not revoked."""
    found: dict[str, Approver] = {}
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        try:
            key = signing.load_public_key(path)
        except CryptoError:
            raise NotRunnable(
                f"approver key file {path.name} is unreadable: fix or remove it",
                reason="approval-invalid",
            ) from None
        parts = path.read_text().split(maxsplit=2)
        name = parts[2].strip() if len(parts) > 2 else path.stem
        found[signing.key_id(key)] = Approver(signing.key_id(key), name, key)
    for key_id in revoked(folder):
        found.pop(key_id, None)
    return found


def _signed(body: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    signature = signing.sign(key, canonical_bytes(body)).decode().strip()
    return (json.dumps({"body": body, "signature": signature}, indent=2) + "\n").encode()


def _read_signed(path: Path, kind: str, folder: Path) -> tuple[dict[str, Any], str]:
    """A signed file's body and the key id that signed it; NotRunnable if it does not verify."""
    try:
        envelope = json.loads(path.read_text("utf-8"))
        body, signature = envelope["body"], envelope["signature"]
        if body.get("type") != kind:
            raise ValueError(kind)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise NotRunnable(f"{path.name} is unreadable", reason="approval-invalid") from None
    key_id = str(body.get("key_id"))
    if key_id in revoked(folder):
        raise NotRunnable(f"{path.name} was signed by revoked key {key_id}", reason="revoked-key")
    approver = trusted_approvers(folder).get(key_id)
    if approver is None:
        raise NotRunnable(
            f"{path.name} was signed by {key_id}, which is not a trusted approver",
            reason="untrusted-key",
        )
    try:
        signing.verify(approver.key, canonical_bytes(body), signature.encode())
    except CryptoError:
        raise NotRunnable(
            f"{path.name}: signature does not verify", reason="approval-invalid"
        ) from None
    return body, approver.name


def check_runnable(contract: Contract, today: dt.date) -> Status:
    """The status of a contract today; NotRunnable, with a reason code, unless it may run."""
    folder = approvers_dir(contract.path)
    if contract.status != "active":
        raise NotRunnable(
            f"contract {contract.id} is {contract.status!r}, not 'active'", reason="not-active"
        )
    suspension = suspension_path(contract.path)
    if suspension.exists():
        try:
            body, name = _read_signed(suspension, SUSPENSION_TYPE, folder)
        except NotRunnable as exc:  # an unverifiable suspension still stops: it is the safe side
            raise NotRunnable(
                f"contract {contract.id} has a suspension file that does not verify ({exc}); "
                "it stays stopped until an approver resumes it",
                reason="suspended",
            ) from None
        raise NotRunnable(
            f"contract {contract.id} was suspended by {name} on {body['at'][:10]}: "
            f"{body['reason']}",
            reason="suspended",
        )
    path = approval_path(contract.path)
    if not path.exists():
        raise NotRunnable(f"contract {contract.id} has not been approved", reason="not-approved")
    body, name = _read_signed(path, APPROVAL_TYPE, folder)
    if body.get("contract_sha256") != contract.sha256:
        raise NotRunnable(
            f"contract {contract.id} has changed since {name} approved it: it needs re-approval",
            reason="changed-since-approval",
        )
    approved_on = dt.date.fromisoformat(body["at"][:10])
    review_by = dt.date.fromisoformat(body["review_by"])
    if review_by > review_limit(approved_on):
        raise NotRunnable(
            f"the approval of {contract.id} sets a review date more than two years ahead",
            reason="approval-invalid",
        )
    due = min(review_by, contract.review_date)
    if due < today:
        raise NotRunnable(
            f"contract {contract.id} was due for review on {due.isoformat()}",
            reason="review-overdue",
        )
    return Status(True, "ok", "approved", f"{name} ({body['key_id']})", body["at"], due.isoformat())


def status(contract: Contract, today: dt.date) -> Status:
    """Like check_runnable, but returns the refusal as a Status instead of raising."""
    try:
        return check_runnable(contract, today)
    except NotRunnable as exc:
        return Status(False, exc.reason, str(exc))


def _signer(key: Ed25519PrivateKey, folder: Path) -> Approver:
    key_id = signing.key_id(key.public_key())
    approver = trusted_approvers(folder).get(key_id)
    if approver is None:
        raise ApprovalError(
            f"key {key_id} is not a trusted approver: add its .pub to {folder} first"
        )
    return approver


def approve(
    contract: Contract,
    key: Ed25519PrivateKey,
    *,
    now: dt.datetime,
    review_by: dt.date | None = None,
) -> Path:
    """Sign an approval of the contract as it is now; return the approval file."""
    if contract.status != "active":
        raise ApprovalError(
            f"contract {contract.id} is {contract.status!r}: set status to 'active' to approve it"
        )
    approver = _signer(key, approvers_dir(contract.path))
    limit = review_limit(now.date())
    if review_by is not None and review_by > limit:
        raise ApprovalError(
            f"review date {review_by.isoformat()} is more than two years ahead "
            f"(latest {limit.isoformat()})"
        )
    if review_by is not None and review_by <= now.date():
        raise ApprovalError("the review date must be in the future")
    due = min(review_by or limit, contract.review_date, limit)
    if due <= now.date():
        raise ApprovalError(f"the contract's reviewDate {contract.review_date} has passed")
    body = {
        "type": APPROVAL_TYPE,
        "contract_id": contract.id,
        "contract_version": contract.version,
        "contract_sha256": contract.sha256,
        "key_id": approver.key_id,
        "approver": approver.name,
        "at": now.isoformat(timespec="seconds"),
        "review_by": due.isoformat(),
    }
    path = approval_path(contract.path)
    path.write_bytes(_signed(body, key))
    return path


def suspend(contract: Contract, key: Ed25519PrivateKey, *, reason: str, now: dt.datetime) -> Path:
    """Stop the agreement at once; nothing is deleted. Return the suspension file."""
    if not reason.strip():
        raise ApprovalError("a suspension needs a reason")
    approver = _signer(key, approvers_dir(contract.path))
    body = {
        "type": SUSPENSION_TYPE,
        "contract_id": contract.id,
        "contract_sha256": contract.sha256,
        "key_id": approver.key_id,
        "approver": approver.name,
        "at": now.isoformat(timespec="seconds"),
        "reason": reason.strip(),
    }
    path = suspension_path(contract.path)
    path.write_bytes(_signed(body, key))
    return path


def resume(contract: Contract, key: Ed25519PrivateKey) -> Approver:
    """Lift a suspension (a trusted approver only); return who lifted it."""
    approver = _signer(key, approvers_dir(contract.path))
    path = suspension_path(contract.path)
    if not path.exists():
        raise ApprovalError(f"contract {contract.id} is not suspended")
    path.unlink()
    return approver
