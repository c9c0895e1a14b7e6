"""IG approval, suspension and the gate every task passes.

An approval is a small signed JSON file beside the contract (`NAME.approval.json`) binding the
approver's key, the time, the review date and the SHA-256 of the contract's canonical form. Only
keys in the operator's trust configuration (`exchange.trust`) count, whatever folder the file is in.

Each approval also keeps the approved contract's exact bytes in `approved/ID/SHA256.yaml` beside
the contract (`approved_copy_path`), so the next approval, and `exchange contract diff`, can show
what changed since the last approved version without git.

Suspensions and resumes are signed statements keyed by contract id: a suspension holds whatever
file the contract is copied to, and only a trusted officer's signed resume naming that very
suspension lifts it. A suspension is kept twice, in the audit ledger and in the contracts
folder's `suspensions/ID/`; either copy alone keeps the agreement stopped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit.events import Event
from exchange.contract import Contract
from exchange.contract.canonical import canonical_bytes, canonical_sha256
from exchange.crypto import signing
from exchange.errors import ContractError, CryptoError, InvalidRequest, NotRunnable
from exchange.files import write_public
from exchange.trust import Approver, Trust, load_trust

if TYPE_CHECKING:
    from exchange.audit import Entry, Ledger
    from exchange.contract.diff import Change
    from exchange.settings import Settings

APPROVAL_TYPE = "exchange-approval/1"
SUSPENSION_TYPE = "exchange-suspension/2"
RESUME_TYPE = "exchange-resume/1"
SUSPENDED, RESUMED = Event.CONTRACT_SUSPENDED, Event.CONTRACT_RESUMED
REVIEW_YEARS = 2  # the protocol reviews every agreement at least every two years
APPROVED_DIR = "approved"  # beside the contracts; its subfolders are never read as contracts


class Suspended(NotRunnable):
    """The agreement is suspended; `on` is the verified suspension's date, if one verifies."""

    def __init__(self, message: str, *, on: str | None = None) -> None:
        super().__init__(message, reason="suspended")
        self.on = on


class ApprovalError(InvalidRequest):
    """An approval or suspension cannot be made as asked (exit code 2)."""


@dataclass(frozen=True)
class Status:
    """Whether a contract may run today, and why not."""

    runnable: bool
    reason: str  # a code: ok, not-active, suspended, not-approved, ...
    message: str
    approver: str | None = None
    approved_at: str | None = None
    review_by: str | None = None
    suspended_on: str | None = None  # the date of a verified suspension (for public pages)


def approval_path(contract_path: Path) -> Path:
    """The approval file beside a contract."""
    return contract_path.with_name(f"{contract_path.stem}.approval.json")


def approved_copy_path(contract_path: Path, contract_id: str, sha256: str) -> Path:
    """Where the exact bytes of an approved version of a contract are kept."""
    return contract_path.parent / APPROVED_DIR / contract_id / f"{sha256}.yaml"


@dataclass(frozen=True)
class LastApproval:
    """The approval file beside a contract, as a base to compare a new version with."""

    sha256: str
    version: str
    approver: str
    at: str
    verified: bool  # signed by a key the trust anchor lists now
    copy: Path | None  # the approved bytes, kept and matching `sha256`; None if not kept


@dataclass(frozen=True)
class Preview:
    """What an approval would sign, shown to the officer before signing."""

    contract: Contract
    review_by: dt.date
    last: LastApproval | None
    changes: tuple[Change, ...] | None  # since the last approved copy; None without one
    same_version: tuple[str, ...]  # digests of other approved contents with this version

    @property
    def verdict(self) -> str | None:
        """identical, editorial or needs-re-approval; None when there is nothing to compare."""
        from exchange.contract.diff import classify

        if self.changes is None or self.last is None:
            return None
        verdict = classify(self.changes)
        if verdict == "identical" and self.last.sha256 != self.contract.sha256:
            return "needs-re-approval"  # the same terms, the fields in another order
        return verdict


def _copy_matches(path: Path, sha256: str) -> bool:
    """Whether a kept copy parses to exactly the approved content (not edited since)."""
    from exchange.contract.load import read_document  # the loader pulls in pyarrow: not at import

    try:
        return path.is_file() and canonical_sha256(read_document(path)) == sha256
    except (ContractError, OSError):
        return False


def last_approval(
    contract_path: Path, contract_id: str, trust: Trust | None
) -> LastApproval | None:
    """The approval beside a contract file and its kept copy; None if there is no such file.

    With `trust`, `verified` says whether a trusted key signed it; an approval of another
    contract id is no base for this one, and one that does not verify names no kept copy."""
    path = approval_path(contract_path)
    try:
        envelope = json.loads(path.read_text("utf-8"))
        body, signature = envelope["body"], envelope["signature"]
        sha256, version = str(body["contract_sha256"]), str(body["contract_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if body.get("contract_id") != contract_id or len(sha256) != 64:
        return None
    approver, verified = str(body.get("approver")), False
    if trust is not None:
        try:
            approver = _verified(body, signature, APPROVAL_TYPE, trust, path.name).label
            verified = True
        except NotRunnable:
            pass
    copy = approved_copy_path(contract_path, contract_id, sha256)
    # Only a verified approval names a kept copy: a committer can write an unsigned approval
    # of new content plus a matching copy, and a widened contract would compare as identical.
    return LastApproval(
        sha256,
        version,
        approver,
        str(body.get("at")),
        verified,
        copy if verified and _copy_matches(copy, sha256) else None,
    )


def _same_version(contract: Contract, last: LastApproval | None) -> tuple[str, ...]:
    """Digests of approved contents, other than this one, that carry this contract's version."""
    from exchange.contract.load import read_document

    found: set[str] = set()
    if last is not None and last.version == contract.version and last.sha256 != contract.sha256:
        found.add(last.sha256)
    folder = contract.path.parent / APPROVED_DIR / contract.id
    for copy in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        if copy.stem == contract.sha256 or copy.stem in found:
            continue
        try:
            version = str(read_document(copy).get("version"))
        except (ContractError, OSError):
            continue
        if version == contract.version:
            found.add(copy.stem)
    return tuple(sorted(found))


def review_limit(day: dt.date) -> dt.date:
    """The latest review date an approval given on `day` may set."""
    try:
        return day.replace(year=day.year + REVIEW_YEARS)
    except ValueError:  # 29 February
        return day.replace(year=day.year + REVIEW_YEARS, day=28)


def statement_digest(envelope: Any) -> str:
    """What names a suspension: the SHA-256 of its signature (the same in every copy)."""
    signature = envelope.get("signature") if isinstance(envelope, dict) else None
    return hashlib.sha256(str(signature).encode()).hexdigest()


def _signature(body: dict[str, Any], key: Ed25519PrivateKey) -> str:
    return signing.sign(key, canonical_bytes(body)).decode().strip()


def _verified(body: Any, signature: Any, kind: str, trust: Trust, label: str) -> Approver:
    """The trusted approver who signed `body`; NotRunnable with a reason code otherwise."""
    if not isinstance(body, dict) or body.get("type") != kind or not isinstance(signature, str):
        raise NotRunnable(f"{label} is unreadable", reason="approval-invalid")
    key_id = str(body.get("key_id"))
    if key_id in trust.revoked:
        raise NotRunnable(f"{label} was signed by revoked key {key_id}", reason="revoked-key")
    approver = trust.approver(key_id)
    if approver is None:
        raise NotRunnable(
            f"{label} was signed by {key_id}, which is not a trusted approver",
            reason="untrusted-key",
        )
    try:
        signing.verify(approver.key, canonical_bytes(body), signature.encode())
    except CryptoError:
        raise NotRunnable(
            f"{label}: signature does not verify", reason="approval-invalid"
        ) from None
    return approver


class Governance:
    """Decides, from the trust anchor and the ledger, whether an agreement may run."""

    def __init__(self, trust: Trust, ledger: Ledger, contracts: Path | None = None) -> None:
        self.trust = trust
        self.ledger = ledger
        self.contracts = contracts

    @classmethod
    def from_settings(cls, settings: Settings, ledger: Ledger | None = None) -> Governance:
        """The configured trust anchor, and the configured ledger unless one is given."""
        from exchange.audit import Ledger

        trust = load_trust(settings.approvers, contracts=settings.contracts)
        return cls(trust, ledger or Ledger(settings.audit_url), settings.contracts)

    # -- suspensions ------------------------------------------------------------------------

    def _statements(self, contract_id: str) -> list[Entry]:
        from exchange.audit.entry import Entry
        from exchange.audit.storage import entries

        with self.ledger.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries)
                .where(
                    entries.c.contract_id == contract_id,
                    entries.c.event.in_([SUSPENDED, RESUMED]),
                )
                .order_by(entries.c.seq)
            ).all()
        return [Entry(**row._mapping) for row in rows]

    def _suspension_files(self, contract_id: str) -> list[dict[str, Any]]:
        """Signed suspensions filed in the contracts folder (a second copy of the ledger's)."""
        if self.contracts is None:
            return []
        found = []
        for path in sorted((self.contracts / "suspensions" / contract_id).glob("*.json")):
            try:
                envelope = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                envelope = {"statement": None, "signature": path.name}  # still stops
            found.append(envelope if isinstance(envelope, dict) else {"signature": path.name})
        return found

    def outstanding(self, contract_id: str) -> dict[str, dict[str, Any]]:
        """The suspensions not yet lifted, by digest: in the ledger or filed beside contracts.

        Each copy alone keeps the agreement stopped, so removing a suspension takes both a
        ledger edit (which breaks the chain) and a change to the contracts folder."""
        statements = self._statements(contract_id)
        suspensions = {statement_digest(e.data): e.data for e in statements if e.event == SUSPENDED}
        for envelope in self._suspension_files(contract_id):
            suspensions.setdefault(statement_digest(envelope), envelope)
        lifted: set[str] = set()
        for entry in statements:
            if entry.event != RESUMED:
                continue
            try:
                _verified(
                    entry.data.get("statement"),
                    entry.data.get("signature"),
                    RESUME_TYPE,
                    self.trust,
                    "resume",
                )
            except NotRunnable:
                continue  # a resume that does not verify lifts nothing
            statement = entry.data["statement"]
            if statement.get("contract_id") == contract_id:
                lifted.update(str(d) for d in statement.get("lifts") or [])
        return {d: s for d, s in suspensions.items() if d not in lifted}

    def suspension(self, contract_id: str) -> NotRunnable | None:
        """Why the agreement is suspended now, or None. Anything unverifiable stays suspended."""
        outstanding = self.outstanding(contract_id)
        if not outstanding:
            return None
        for data in outstanding.values():
            try:
                who = _verified(
                    data.get("statement"),
                    data.get("signature"),
                    SUSPENSION_TYPE,
                    self.trust,
                    "suspension",
                )
            except NotRunnable:
                continue
            statement = data["statement"]
            if statement.get("contract_id") != contract_id:
                continue
            on = str(statement.get("at"))[:10]
            return Suspended(
                f"contract {contract_id} was suspended by {who.name} on {on}: "
                f"{statement.get('reason')}",
                on=on,
            )
        return Suspended(  # the safe side: an unverifiable suspension still stops
            f"contract {contract_id} has a suspension that does not verify; "
            "it stays stopped until a trusted officer resumes it"
        )

    # -- the gate ---------------------------------------------------------------------------

    def check(self, contract: Contract, today: dt.date) -> Status:
        """The status of a contract today; NotRunnable, with a reason code, unless it may run."""
        if contract.status != "active":
            raise NotRunnable(
                f"contract {contract.id} is {contract.status!r}, not 'active'", reason="not-active"
            )
        suspended = self.suspension(contract.id)
        if suspended is not None:
            raise suspended
        path = approval_path(contract.path)
        if not path.exists():
            raise NotRunnable(
                f"contract {contract.id} has not been approved", reason="not-approved"
            )
        try:
            envelope = json.loads(path.read_text("utf-8"))
            body, signature = envelope["body"], envelope["signature"]
        except (OSError, ValueError, KeyError, TypeError):
            raise NotRunnable(f"{path.name} is unreadable", reason="approval-invalid") from None
        approver = _verified(body, signature, APPROVAL_TYPE, self.trust, path.name)
        if body.get("contract_sha256") != contract.sha256 or body.get("contract_id") != contract.id:
            raise NotRunnable(
                f"contract {contract.id} has changed since {approver.name} approved it: "
                "it needs re-approval",
                reason="changed-since-approval",
            )
        try:
            approved_on = dt.date.fromisoformat(str(body["at"])[:10])
            review_by = dt.date.fromisoformat(str(body["review_by"]))
        except (KeyError, ValueError):
            raise NotRunnable(f"{path.name} is unreadable", reason="approval-invalid") from None
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
        return Status(True, "ok", "approved", approver.label, body["at"], due.isoformat())

    def status(self, contract: Contract, today: dt.date) -> Status:
        """Like check, but returns the refusal as a Status instead of raising."""
        try:
            return self.check(contract, today)
        except Suspended as exc:
            return Status(False, exc.reason, str(exc), suspended_on=exc.on)
        except NotRunnable as exc:
            return Status(False, exc.reason, str(exc))

    # -- officers' acts -----------------------------------------------------------------------

    def signer(self, key: Ed25519PrivateKey) -> Approver:
        """The trusted approver holding this key; ApprovalError otherwise."""
        key_id = signing.key_id(key.public_key())
        approver = self.trust.approver(key_id)
        if approver is None:
            raise ApprovalError(
                f"key {key_id} is not a trusted approver: the operator adds it to "
                f"{self.trust.source or 'the trusted approvers file'} first"
            )
        return approver

    def review_date(
        self, contract: Contract, *, now: dt.datetime, review_by: dt.date | None = None
    ) -> dt.date:
        """The review date an approval given now would set; ApprovalError if it cannot be
        given: the contract is not active, or the review date asked for is not allowed."""
        if contract.status != "active":
            raise ApprovalError(
                f"contract {contract.id} is {contract.status!r}: "
                "set status to 'active' to approve it"
            )
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
        return due

    def preview(
        self, contract: Contract, *, now: dt.datetime, review_by: dt.date | None = None
    ) -> Preview:
        """What approving the contract now would sign, and what changed since the last
        approved version; ApprovalError as `review_date`."""
        from exchange.contract.diff import diff_documents  # only officers' commands need it
        from exchange.contract.load import read_document

        due = self.review_date(contract, now=now, review_by=review_by)
        last = last_approval(contract.path, contract.id, self.trust)
        changes = None
        if last is not None and last.copy is not None:
            changes = tuple(diff_documents(read_document(last.copy), dict(contract.document)))
        return Preview(contract, due, last, changes, _same_version(contract, last))

    def approve(
        self,
        contract: Contract,
        key: Ed25519PrivateKey,
        *,
        now: dt.datetime,
        review_by: dt.date | None = None,
    ) -> Path:
        """Sign an approval of the contract as it is now and keep a copy of the approved
        bytes; return the approval file. ApprovalError if it cannot be given."""
        due = self.review_date(contract, now=now, review_by=review_by)
        approver = self.signer(key)
        self._keep_copy(contract)
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
        envelope = {"body": body, "signature": _signature(body, key)}
        path.write_text(json.dumps(envelope, indent=2) + "\n")
        return path

    def _keep_copy(self, contract: Contract) -> Path:
        """Keep the exact bytes being approved, read once and checked against the hash signed."""
        from exchange.contract.load import parse_text

        data = contract.path.read_bytes()
        try:
            same = canonical_sha256(parse_text(data.decode("utf-8"), str(contract.path)))
        except (ContractError, UnicodeDecodeError):
            same = ""
        if same != contract.sha256:
            raise ApprovalError(
                f"{contract.path} changed while it was being approved: nothing was signed; "
                "review it and approve again"
            )
        copy = approved_copy_path(contract.path, contract.id, contract.sha256)
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if not _copy_matches(copy, contract.sha256):
            copy.unlink(missing_ok=True)  # an edited copy is no record of what was approved
            write_public(copy, data)
        return copy

    def suspend(
        self, contract: Contract, key: Ed25519PrivateKey, *, reason: str, now: dt.datetime
    ) -> tuple[Entry, Path | None]:
        """Stop the agreement at once, under whatever file name it runs.

        The signed statement goes into the ledger and, as a second copy, into the contracts
        folder's `suspensions/ID/` (commit it). Returns the entry and the file written."""
        if not reason.strip():
            raise ApprovalError("a suspension needs a reason")
        approver = self.signer(key)
        body = {
            "type": SUSPENSION_TYPE,
            "contract_id": contract.id,
            "contract_sha256": contract.sha256,
            "key_id": approver.key_id,
            "at": now.isoformat(timespec="seconds"),
            "reason": reason.strip(),
        }
        envelope = {"statement": body, "signature": _signature(body, key)}
        entry = self.ledger.append(
            SUSPENDED, {**envelope, "approver": approver.label}, contract_id=contract.id
        )
        path = None
        if self.contracts is not None:
            folder = self.contracts / "suspensions" / contract.id
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{statement_digest(envelope)[:16]}.json"
            path.write_text(json.dumps(envelope, indent=2) + "\n")
        return entry, path

    def resume(self, contract: Contract, key: Ed25519PrivateKey, *, now: dt.datetime) -> Approver:
        """Lift every outstanding suspension with one signed resume naming each of them."""
        approver = self.signer(key)
        outstanding = self.outstanding(contract.id)
        if not outstanding:
            raise ApprovalError(f"contract {contract.id} is not suspended")
        body = {
            "type": RESUME_TYPE,
            "contract_id": contract.id,
            "key_id": approver.key_id,
            "at": now.isoformat(timespec="seconds"),
            "lifts": sorted(outstanding),
        }
        self.ledger.append(
            RESUMED,
            {"statement": body, "signature": _signature(body, key), "approver": approver.label},
            contract_id=contract.id,
        )
        return approver
