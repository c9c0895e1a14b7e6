"""Airflow DAG-folder check: no two contract files may claim the same contract id.

This file defines no DAG. When two files in the contracts folder share an id (and so a DAG id),
`exchange_dags.py` builds a DAG for neither, so an approved agreement is never silently
replaced by another file; and this file fails to import with an error naming both files, which
Airflow shows as an import error. Keeping the error here, not in `exchange_dags.py`, means
every other agreement's DAG goes on running: an import error marks all DAGs of its file stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Airflow puts a DAG bundle's folder on sys.path, a bare DagBag does not: find the sibling.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from contract_outline import clash_message, contracts_folder, outlines


class DuplicateContractId(Exception):
    """Two or more contract files claim one contract id."""


_, _clashes = outlines(contracts_folder())
if _clashes:
    raise DuplicateContractId("; ".join(clash_message(d, p) for d, p in sorted(_clashes.items())))
