"""The regress stage: VRAM tolerances, throughput change points with a confirming rerun, incidents."""

from vramwatch.regress.detect import Detection, detect, detect_for_run, regressions
from vramwatch.regress.findings import Finding, Suspect
from vramwatch.regress.history import HistoryError, split_tonight
from vramwatch.regress.incidents import cutoffs_for, group_findings, incident_for_group, reconcile, shared_cause
from vramwatch.regress.throughput import Baseline, ThroughputParams, confirm, throughput_findings
from vramwatch.regress.vram import (
    COMPONENTS,
    Tolerances,
    VramTolerance,
    memory_and_status_findings,
    vanished_findings,
)

__all__ = [
    "COMPONENTS",
    "Baseline",
    "Detection",
    "Finding",
    "HistoryError",
    "Suspect",
    "ThroughputParams",
    "Tolerances",
    "VramTolerance",
    "confirm",
    "cutoffs_for",
    "detect",
    "detect_for_run",
    "group_findings",
    "incident_for_group",
    "memory_and_status_findings",
    "reconcile",
    "regressions",
    "shared_cause",
    "split_tonight",
    "throughput_findings",
    "vanished_findings",
]
