"""What a change is: its kinds, each needing re-approval or not, and the verdict on a list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

KINDS: Final[dict[str, str]] = {
    "field-added": "a new outgoing field (re-approval)",
    "field-removed": "a field is no longer sent (editorial: less data)",
    "source-changed": "a field or the dataset is read from a different source (re-approval)",
    "transform-weakened": "a field is minimised less than before (re-approval)",
    "transform-strengthened": "a field is minimised more than before (editorial)",
    "transform-changed": "a transform whose strength cannot be compared (re-approval)",
    "type-changed": "a field's type; editorial only when it follows a transform change",
    "classification-lowered": "a field's classification lowered (re-approval)",
    "classification-raised": "raised; re-approval when it becomes special category or criminal",
    "classification-changed": "a classification that cannot be ranked (re-approval)",
    "subject-key-changed": "which field identifies the person (re-approval)",
    "direct-identifier-changed": "unmarking a direct identifier is re-approval; marking editorial",
    "justification-changed": "why a field sent in full is needed (re-approval)",
    "dataset-changed": "the shared dataset added, removed or renamed (re-approval)",
    "id-changed": "the contract id, which ties the audit trail together (re-approval)",
    "purpose-added": "a new purpose for the sharing (re-approval)",
    "purpose-removed": "a purpose dropped (editorial: less sharing)",
    "provider-changed": "the providing organisation or department (re-approval)",
    "recipient-changed": "the receiving organisation or department (re-approval)",
    "legal-basis-changed": "any part of the legal basis (re-approval)",
    "retention-longer": "the recipient keeps drops longer (re-approval)",
    "retention-shorter": "the recipient keeps drops for less time (editorial)",
    "retention-changed": "a retention that cannot be compared, added or removed (re-approval)",
    "retention-action-changed": "delete -> archive is re-approval; archive -> delete editorial",
    "recipient-key-added": "a new key can decrypt the drops (re-approval)",
    "recipient-key-removed": "a key removed; the remaining holders must be confirmed (re-approval)",
    "endpoint-changed": "where or in what format drops are delivered (re-approval)",
    "pseudonymisation-key-changed": "the pseudonymisation key's secret name (re-approval)",
    "objection-rule-changed": "how objections are honoured; turning an override off is editorial",
    "schedule-changed": "when or how often data is sent (re-approval)",
    "rows-changed": "which rows are sent: fewer is editorial, more or different re-approval",
    "acknowledgements-changed": "how the recipient acknowledges drops (re-approval)",
    "inbox-management-changed": "whether the sender deletes files on the recipient's server",
    "review-date-changed": "later is re-approval, earlier is editorial",
    "status-changed": "becoming active is re-approval; anything else editorial",
    "dpia-changed": "a different DPIA reference (re-approval)",
    "termination-changed": "the termination terms (re-approval)",
    "role-changed": "a role added or its access changed is re-approval; removed is editorial",
    "quality-loosened": "a quality rule relaxed or removed (re-approval)",
    "quality-tightened": "a quality rule added or made stricter (editorial)",
    "quality-changed": "a quality rule changed in a way that cannot be ranked (re-approval)",
    "wording": "descriptions, names for people, tags (editorial)",
    "contacts-changed": "contacts of the team, roles, parties or rights requests (editorial)",
    "version-changed": "the contract's version string (editorial)",
    "restated": "the same term written another way, e.g. 24 m for 2 y (editorial)",
    "unclassified": "a change this tool does not know how to judge (re-approval)",
}


@dataclass(frozen=True)
class Change:
    """One difference between two versions of a contract."""

    path: str
    kind: str
    summary: str
    reapproval: bool

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}")


def classify(changes: Iterable[Change]) -> str:
    """'identical', 'editorial' or 'needs-re-approval' for a list of changes."""
    changes = list(changes)
    if not changes:
        return "identical"
    return "needs-re-approval" if any(c.reapproval for c in changes) else "editorial"
