"""Airflow's `[core] hostname_callable` for Celery workers that share one machine.

Airflow records the hostname a task instance ran on from this callable (the default is the machine's FQDN, the same
for every worker here). Each local worker names itself with VRAMWATCH_WORKER_HOSTNAME, as separate hosts would.
"""

from __future__ import annotations

import os


def from_environment() -> str:
    return os.environ["VRAMWATCH_WORKER_HOSTNAME"]
