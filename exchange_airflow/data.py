"""What each page shows, from the same library calls (and CLI helpers) the `exchange` command
uses: this module maps a request to them and returns plain dicts for the templates."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from exchange import reporting, subject_access
from exchange.approval import ApprovalError, Governance
from exchange.audit.ledger import GENESIS, Ledger, Verification, Verified
from exchange.cli import auditors  # the CLI's own ledger, key and origin look-ups
from exchange.contract import load_contract
from exchange.contract.render import approval_summary, describe_cron, summary
from exchange.errors import ContractError, ExchangeError
from exchange.settings import Settings

_log = logging.getLogger(__name__)
REVIEW_WARNING_DAYS = 60  # a review due this soon is highlighted in the register
FULL_VERIFY_SECONDS = 300  # `[exchange_view] full_verify_seconds`: how old a full read may be
# The arguments `exchange audit report` / `audit subject` get when none is typed.
NO_OPTIONS = argparse.Namespace(public_key=None, origin=None, checkpoints=None, url=None)


def _governance(settings: Settings) -> Governance | None:
    try:
        return Governance.from_settings(settings)
    except ExchangeError:
        return None  # each agreement then says its approval cannot be checked


# What this process verified last, per ledger: pages between full reads check only what was
# appended since (`Ledger.verify_from`). Not evidence; it dies with the process.
_verified: dict[tuple[str, str], Verified] = {}
# When each ledger was last read whole, by `time.monotonic` (a wall clock set back must not
# postpone the next full read), and the verdict of a full read that failed: kept as long as a
# pass would be, so pages do not each queue a full read behind the lock while the ledger is
# broken, which is exactly when people look.
_read_at: dict[tuple[str, str], float] = {}
_failed: dict[tuple[str, str], Verification] = {}
_full_reads: dict[tuple[str, str], int] = {}  # how many, per ledger: a fold's generation
_verifying = threading.Lock()  # one verification at a time: two full reads would share 2 cores
# The period's report folded so far, per ledger and period, and the full read it was begun
# after: pages fold only the entries appended since (`reporting.Fold`); begun again after
# each full read, so the figures are re-read from every entry as often as the verification.
_folds: dict[tuple[tuple[str, str], str, str], tuple[int, reporting.Fold]] = {}
_folding = threading.Lock()
MAX_FOLDS = 8  # periods kept per process (the default one, and a few asked for by address)
_warned: set[str] = set()  # the bad `full_verify_seconds` values already logged


def full_verify_seconds(raw: str | None) -> float:
    """`[exchange_view] full_verify_seconds` as a number of seconds; FULL_VERIFY_SECONDS (and
    one logged warning per bad value) when it is not a finite number >= 0."""
    if raw is None or not raw.strip():
        return FULL_VERIFY_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds) and seconds >= 0:
        return seconds
    if raw not in _warned:
        _warned.add(raw)
        _log.warning(
            "[exchange_view] full_verify_seconds = %r is not a number of seconds >= 0; using "
            "the default %d. Set it to a whole number of seconds (0 reads every entry on "
            "every page) and restart the api-server",
            raw[:40],
            FULL_VERIFY_SECONDS,
        )
    return FULL_VERIFY_SECONDS


def _key(url: str, ledger: Ledger) -> tuple[str, str]:
    """What this process keeps per ledger is keyed by its URL and checkpoints folder."""
    return (url, str(ledger.anchor.folder) if ledger.anchor else "")


def verify(
    url: str,
    ledger: Ledger,
    public: Any,
    origin: str | None,
    *,
    full_every: float = FULL_VERIFY_SECONDS,
    now: float | None = None,
) -> tuple[Verification, Verified | None]:
    """The ledger verified as `exchange audit verify` does, reading every entry only when the
    last full read in this process is `full_every` seconds old (or there is none); otherwise
    the entries appended since, and that the ledger still extends what was verified. A full
    read that failed is the answer until it is as old (`now`: a `time.monotonic` reading)."""
    key = _key(url, ledger)
    with _verifying:
        mark = _verified.get(key)
        when = time.monotonic() if now is None else now
        read_at = _read_at.get(key)
        stale = read_at is None or when - read_at >= full_every
        failed = _failed.get(key)
        if failed is not None and not stale:
            return failed, mark
        whole = mark is None or stale
        result, kept = ledger.verify_from(mark, whole=whole, public_key=public, origin=origin)
        # A failure always comes from a full read; so does a new `full_at` (a checkpoint
        # signed since, say). A clock too coarse to tell only brings the next one sooner.
        if whole or not result.ok or (kept and mark and kept.full_at != mark.full_at):
            _read_at[key] = when
            _full_reads[key] = _full_reads.get(key, 0) + 1
        if result.ok:
            _failed.pop(key, None)
        else:
            _failed[key] = result
        if kept is not None:
            _verified[key] = kept
    return result, kept


def report(
    settings: Settings, since: dt.date, until: dt.date, *, full_every: float = FULL_VERIFY_SECONDS
) -> reporting.Report:
    """`exchange audit report --json` for the period: the ledger verified, its head and newest
    checkpoint attested (the same calls as the command, with its default options); the
    verification read in full at most `full_every` seconds ago (`verify`)."""
    ledger = auditors._audit_ledger(settings)
    try:
        return _report(settings, ledger, since, until, full_every)
    finally:
        ledger.close()


def _report(
    settings: Settings, ledger: Ledger, since: dt.date, until: dt.date, full_every: float
) -> reporting.Report:
    public = auditors._gateway_public_key(NO_OPTIONS, settings)
    head = ledger.head()
    verified, mark = verify(
        settings.audit_url,
        ledger,
        public,
        auditors._audit_origin(NO_OPTIONS, settings, public),
        full_every=full_every,
    )
    problem = "" if verified.ok else (auditors._wrong_key(ledger, public, verified.broken_at) or "")
    if problem:
        unchecked = ledger.verify()
        if not unchecked.ok:
            verified, problem = unchecked, ""
    if mark is not None and verified.ok and not problem:
        built = folded(_key(settings.audit_url, ledger), ledger, head[0], since, until)
    else:  # figures of a ledger that does not verify are read afresh, and nothing is kept
        entries = ledger.entries(until=head[0]) if head[0] else iter(())
        built = reporting.build(entries, since, until)
    reporting.attest(
        built,
        ledger,
        verified,
        where=auditors.ledger_name(settings.audit_url),
        head=head,
        public_key=public,
        made_by="the Exchanges view",
        problem=problem,
    )
    if mark is not None and verified.ok and not problem:
        # What this page checked itself, and when every entry was last read.
        built.evidence["verification"]["full_at"] = mark.full_at.isoformat(timespec="seconds")
        built.evidence["verification"]["full_every"] = int(full_every)
    return built


def folded(
    key: tuple[str, str], ledger: Ledger, size: int, since: dt.date, until: dt.date
) -> reporting.Report:
    """`reporting.build` over entries 1..size, folding only those appended since this
    process's last page of the period; every entry is read again after each full read."""
    slot = (key, since.isoformat(), until.isoformat())
    with _folding:
        generation = _full_reads.get(key, 0)
        held = _folds.pop(slot, None)
        fold = held[1] if held is not None and held[0] == generation else None
        if fold is not None and fold.size > size:
            # Another page folded entries after this one read the head: report exactly the
            # entries this page attests, and keep the newer fold.
            _folds[slot] = (generation, fold)
            return reporting.build(ledger.entries(until=size), since, until)
        if fold is not None and not _extend(fold, ledger, size):
            fold = None  # an appended entry does not follow the fold's last: read every entry
        if fold is None:
            fold = reporting.Fold(since, until)
            for entry in ledger.entries(until=size) if size else ():
                fold.add(entry)
        _folds[slot] = (generation, fold)
        while len(_folds) > MAX_FOLDS:
            del _folds[next(iter(_folds))]  # the least recently shown
        return fold.report()


def _extend(fold: reporting.Fold, ledger: Ledger, size: int) -> bool:
    """Add entries fold.size+1..size to the fold; False (the fold then half fed) when one is
    not the next in number or does not chain from the one before."""
    expected, prev = fold.size + 1, fold.head or GENESIS
    for entry in ledger.entries(since=expected, until=size) if size >= expected else ():
        if entry.seq != expected or entry.prev_hash != prev:
            return False
        fold.add(entry)
        expected, prev = expected + 1, entry.entry_hash
    return expected == size + 1


def _review(review_by: str | None, today: dt.date) -> str:
    """'overdue', 'due' (within REVIEW_WARNING_DAYS) or '' for a review date."""
    if not review_by:
        return ""
    day = dt.date.fromisoformat(review_by[:10])
    if day < today:
        return "overdue"
    return "due" if (day - today).days <= REVIEW_WARNING_DAYS else ""


def _last_drops(built: reporting.Report) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for totals in built.agreements:
        for drop in totals.drops:
            if drop["at"] > last.get(totals.agreement, {}).get("at", ""):
                last[totals.agreement] = drop
    return last


def register(settings: Settings, today: dt.date, built: reporting.Report) -> list[dict[str, Any]]:
    """Every contract file in the contracts folder (drafts included: this view is internal)."""
    governance = _governance(settings)
    last = _last_drops(built)
    rows: list[dict[str, Any]] = []
    for path in sorted(settings.contracts.glob("*.yaml")):
        try:
            contract = load_contract(path)
        except (ContractError, UnicodeDecodeError):
            rows.append({"file": path.name, "invalid": True})
            continue
        state = approval_summary(contract, today, governance)
        rows.append(
            {
                "file": path.name,
                "invalid": False,
                "id": contract.id,
                "name": contract.name,
                "version": contract.version,
                "status": contract.status,
                "approval": state,
                "review": _review(state["review_by"] or contract.review_date.isoformat(), today),
                "review_by": state["review_by"] or contract.review_date.isoformat(),
                "recipient": contract.recipient.organisation,
                "purposes": list(contract.purposes),
                "legal_basis": contract.legal_basis.summary(),
                "schedule": describe_cron(contract.schedule),
                "last_drop": last.get(contract.id),
            }
        )
    return rows


def find_contract(settings: Settings, contract_id: str) -> Path | None:
    """The contract file with this id in the contracts folder, or None."""
    for path in sorted(settings.contracts.glob("*.yaml")):
        try:
            if load_contract(path).id == contract_id:
                return path
        except (ContractError, UnicodeDecodeError):
            continue
    return None


def agreement(
    settings: Settings, path: Path, today: dt.date, built: reporting.Report
) -> dict[str, Any]:
    """The agreement's summary (as `contract render`), its changes since the last approved
    copy (as `contract approve` previews them), its runs, acknowledgements and incidents."""
    contract = load_contract(path)
    governance = _governance(settings)
    shown = summary(contract, today=today, governance=governance)
    changes: dict[str, Any] = {"verdict": None, "changes": [], "last": None, "problem": ""}
    if governance is not None:
        try:
            preview = governance.preview(contract, now=dt.datetime.now(dt.UTC))
        except ApprovalError as exc:
            changes["problem"] = str(exc)
        else:
            changes.update(
                verdict=preview.verdict,
                changes=list(preview.changes or ()),
                last=preview.last,
            )
    totals = [t for t in built.agreements if t.agreement == contract.id]
    return {
        "contract": contract,
        "path": path,
        "summary": shown,
        "diff": changes,
        "totals": totals,
        "incidents": [i for i in built.incidents if i["agreement"] == contract.id],
        "suspensions": governance.outstanding(contract.id) if governance else {},
        "review": _review(shown["approval"]["review_by"] or shown["review_date"], today),
    }


def subject_lookup(settings: Settings, subject: str, reason: str, who: str) -> dict[str, Any]:
    """`exchange audit subject` for one id: the rows checked against the ledger first, and the
    lookup itself audited (a keyed hash of the id, who asked and why; never the id)."""
    ledger = auditors._audit_ledger(settings)
    public = auditors._gateway_public_key(NO_OPTIONS, settings)
    today = dt.date.today()
    lookup = subject_access.look_up(
        settings,
        subject,
        ledger,
        requested_by=who,
        reason=reason,
        public_key=public,
        origin=auditors._audit_origin(NO_OPTIONS, settings, public),
        governance=_governance(settings),
        today=today,
    )
    return {
        "answers": lookup.answers,
        "text": subject_access.to_text(lookup.answers, today=today),
        "verified": lookup.verified,
        "seq": lookup.seq,
    }
