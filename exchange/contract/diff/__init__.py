"""Compare two versions of a contract as an information-governance officer reviewing it would.

Each difference becomes a `Change`: where it is, a `kind` from the closed set below, one line in
the officer's words, and whether the change needs the agreement re-approved (`reapproval`) or is
editorial. Where the tool cannot tell, it says re-approval: a wrong "editorial" would let a wider
disclosure through unreviewed, a wrong "re-approval" only costs a second look.

Fields (`schema[].properties[]`) are matched by `name`, customProperties by `property`, servers
by `server`, slaProperties by `property` and roles by `role`, so reordering is not a change; nor
is reordering purposes, statutes, recipient keys or tags. The dataset keeps its index in paths
(`schema[0]`), fields and terms are named: `schema[0].properties[birth_month].customProperties.
transformOptions.to`, `customProperties.purposes[research]`.

Kinds. Always re-approval:
    field-added, source-changed, transform-weakened, transform-changed, classification-lowered,
    classification-changed, subject-key-changed, dataset-changed, id-changed, purpose-added,
    provider-changed, recipient-changed, legal-basis-changed, retention-longer,
    retention-changed, recipient-key-added, recipient-key-removed, endpoint-changed,
    pseudonymisation-key-changed, schedule-changed, dpia-changed, termination-changed,
    justification-changed, quality-loosened, quality-changed, acknowledgements-changed,
    inbox-management-changed, unclassified.
Always editorial:
    field-removed, transform-strengthened, purpose-removed, retention-shorter,
    quality-tightened, wording, contacts-changed, version-changed, restated.
Either, by direction (see `KINDS`):
    status-changed, review-date-changed, objection-rule-changed, retention-action-changed,
    classification-raised, type-changed, role-changed, direct-identifier-changed, rows-changed.
How each sharing term is judged is declared in `exchange.contract.vocabulary.terms`; how each
transform compares, in `exchange.contract.vocabulary.transforms`.
A change a stronger transform makes necessary on the same field (its type, type options and
quality rules) is editorial: those rules describe the new, more minimised output.
"""

from __future__ import annotations

from exchange.contract.diff._change import KINDS, Change, classify
from exchange.contract.diff._document import diff_documents
from exchange.contract.diff._revision import read_revision

__all__ = ["KINDS", "Change", "classify", "diff_documents", "read_revision"]
