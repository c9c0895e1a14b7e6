"""Celery settings for the gateway's workers: Airflow's own, and the gateway loaded once.

Every Airflow task forks from a Celery pool process. Importing the gateway and Great Expectations
there, once, before the pool starts, means each task starts with them loaded (shared pages, not
copies) instead of paying seconds of CPU per `prepare` to import Great Expectations again.

Set `AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=exchange_airflow.celery_preload.CELERY_CONFIG` for
the workers (docs/operators.md). The scheduler reads the same settings to send tasks; it never
starts a worker, so it never imports what is preloaded here.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

# What a task imports on its way to the data; Great Expectations (`validators.suite`) dominates.
PRELOADED = ("exchange.gateway", "validators.suite")

CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)

log = logging.getLogger(__name__)


@worker_init.connect
def _preload(**_: Any) -> None:
    """Import what every task needs, in the worker's parent process, before the pool forks."""
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a worker without the quality extra still runs its tasks
            log.warning("exchange: %s not preloaded (%s); tasks import it themselves", name, exc)
        else:
            log.info("exchange: %s preloaded", name)
