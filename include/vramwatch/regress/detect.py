"""The regress stage: tonight's run against its history -> incidents. Pure core first, the warehouse at the edge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from vramwatch.records import ACCEPTED, BenchConfig, BenchResult, Incident
from vramwatch.regress.findings import Finding, Suspect
from vramwatch.regress.incidents import cutoffs_for, forget_before_accepted, reconcile
from vramwatch.regress.throughput import ThroughputParams, confirm, throughput_findings
from vramwatch.regress.vram import Tolerances, memory_and_status_findings, vanished_findings
from vramwatch.rows import HistoryError, split_tonight

if TYPE_CHECKING:
    from vramwatch.warehouse.store import Warehouse


@dataclass(frozen=True)
class Detection:
    """One environment's night: confirmed findings, throughput suspects awaiting a rerun, what ran."""

    night: str
    environment_id: str
    findings: list[Finding]
    suspects: list[Suspect]
    tonight_status: dict[str, str]  # config_id -> status, for every config that ran tonight


def detect(history: pd.DataFrame, run_id: str, open_incidents: Sequence[Incident] = (),
           tolerances: Tolerances = Tolerances(), params: ThroughputParams = ThroughputParams(),
           accepted: Sequence[Incident] = ()) -> Detection:
    """Every check over one environment's history (Warehouse.history(environment_id=...)) for run `run_id`.

    open_incidents are that environment's open or acknowledged incidents: their configs keep the reference of
    before the incident opened. accepted are its accepted incidents: their level is the reference since they opened.
    """
    tonight, before = split_tonight(history, run_id)
    environments = set(tonight["environment_id"])
    if len(environments) != 1:
        raise HistoryError(f"run {run_id!r} has rows of {len(environments)} environments; detect one at a time")
    (environment_id,) = environments
    before = forget_before_accepted(before[before["environment_id"] == environment_id], accepted)
    cutoffs = cutoffs_for(open_incidents)
    findings = memory_and_status_findings(tonight, before, cutoffs, tolerances) + vanished_findings(
        tonight, before, cutoffs)
    confirmed, suspects = throughput_findings(tonight, before, cutoffs, params)
    return Detection(night=str(tonight["night"].iloc[0]), environment_id=environment_id,
                     findings=findings + confirmed, suspects=suspects,
                     tonight_status=dict(zip(tonight["config_id"], tonight["status"])))


def regressions(history: pd.DataFrame, run_id: str, open_incidents: Sequence[Incident] = (),
                rerun_fn: Callable[[str], BenchResult] | None = None, tolerances: Tolerances = Tolerances(),
                params: ThroughputParams = ThroughputParams(), accepted: Sequence[Incident] = ()) -> list[Incident]:
    """detect -> confirm suspects with rerun_fn(config_id) (none given: they wait for the next night) -> incidents."""
    detection = detect(history, run_id, open_incidents, tolerances, params, accepted)
    findings = detection.findings
    if rerun_fn is not None and detection.suspects:
        findings = findings + confirm(detection.suspects, rerun_fn, params)
    return reconcile(findings, open_incidents, detection.night, detection.tonight_status)


def detect_for_run(warehouse: Warehouse, run_id: str, rerun: Callable[[BenchConfig], BenchResult] | None = None,
                   save: bool = True) -> list[Incident]:
    """Detect over the warehouse for one run, per environment, and store the incidents (unless save is false).

    The run's quarantined rows join tonight with status "quarantined": a config whose row failed validation is
    reported as such (when it was ok before), not as vanished, and a night quarantined whole still gets detection.

    rerun(config) benches a config again (the DAG passes the bench stage). Returns tonight's incidents: new ones,
    open ones carried on and ones resolved tonight. Running it twice for a night stores nothing twice.
    """
    quarantined = warehouse.quarantined_history(run_id)  # tonight's rows that validation kept out of history
    environments = set(warehouse.run_environments(run_id)) | set(quarantined["environment_id"])
    history = warehouse.history(environment_ids=environments)
    if not quarantined.empty:
        history = pd.concat([history, quarantined], ignore_index=True)
    tonight, _ = split_tonight(history, run_id)
    configs = {r.config.config_id: r.config for r in warehouse.results_for_run(run_id)} if rerun else {}
    rerun_fn = (lambda config_id: rerun(configs[config_id])) if rerun else None
    incidents: list[Incident] = []
    night = str(tonight["night"].iloc[0])
    for environment_id in sorted(set(tonight["environment_id"])):
        stored = warehouse.incidents(environment_id)
        open_now = [i for i in stored if not i.is_closed]
        accepted = [i for i in stored if i.state == ACCEPTED]
        found = regressions(history[history["environment_id"] == environment_id], run_id, open_now, rerun_fn,
                            accepted=accepted)
        if save:
            known = {_identity(i): i for i in stored if i.opened_night == night}
            found = [warehouse.save_incident(_reuse(i, known), environment_id, night) for i in found]
        incidents += found
    return incidents


def _identity(incident: Incident) -> tuple:
    return incident.kind, incident.metric, tuple(incident.configs), incident.opened_night


def _reuse(incident: Incident, known: dict[tuple, Incident]) -> Incident:
    """A new incident already stored tonight (a retried task) updates that row instead of adding a twin."""
    twin = known.get(_identity(incident)) if incident.incident_id is None else None
    return incident if twin is None else Incident(**{**incident.__dict__, "incident_id": twin.incident_id})
