"""Alert messages, built from records (pure): what regressed and by how much, where, between which builds, and where
the report is. One message per night, whatever the number of channels, so every channel says the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramwatch.config import Paths
from vramwatch.records import BisectResult, Incident, NightSummary, config_name
from vramwatch.redact import redact, redact_data


@dataclass(frozen=True)
class Alert:
    subject: str
    text: str  # plain text: the e-mail body and the Slack message
    payload: dict[str, Any] = field(default_factory=dict)  # the JSON webhook's body

    def __post_init__(self) -> None:
        # every channel sends what is here: an error string quoting a URL with its token leaves masked
        object.__setattr__(self, "subject", redact(self.subject))
        object.__setattr__(self, "text", redact(self.text))
        object.__setattr__(self, "payload", redact_data(self.payload))

    @property
    def key(self) -> str:
        """What a retry of the same task sends again, and a new run of the night does not: its run and subject."""
        return f"{self.payload.get('run_id', '')}: {self.subject}"


def _size(incident: Incident) -> str:
    parts = []
    if incident.delta_mib is not None:
        parts.append(f"{incident.delta_mib:+.0f} MiB")
    if incident.delta_pct is not None:
        parts.append(f"{incident.delta_pct:+.1f}%")
    return " (" + ", ".join(parts) + ")" if parts else ""


def incident_line(incident: Incident) -> str:
    return (f"[{incident.kind}] {incident.metric}{_size(incident)} on "
            f"{', '.join(config_name(c) for c in incident.configs)}; {incident.blamed()}")


def _blamed(paging: list[Incident]) -> str:
    """What the subject blames: the new builds no evidence cleared, else the other causes (regress.detect.attribute)."""
    builds = sorted({i.build_after[:8] for i in paging if i.build_after and i.build_after != i.build_before
                     and not any(line.startswith("llama.cpp") for line in i.cleared)})
    if builds:
        return f"on llama.cpp {', '.join(builds)}"
    others = sorted({c for i in paging for c in i.causes if not c.startswith("llama.cpp")})
    return f"with {'; '.join(others)}" if others else "with no build change"


def report_link(summary: NightSummary, base_url: str = "") -> str:
    """Where a person opens the night's report: under the UI's base URL (the Airflow plugin page serves reports/),
    else the file on the worker that wrote it."""
    if not base_url:
        return summary.report_html
    html, reports = Path(summary.report_html).resolve(), Paths().reports.resolve()
    # a GPU worker's lane keeps its reports in a folder of its own under the served one (config.GpuWorker)
    served = html.relative_to(reports).as_posix() if html.is_relative_to(reports) else f"{summary.night}/summary.html"
    return f"{base_url.rstrip('/')}/reports/{served}"


def regression_alert(summary: NightSummary, base_url: str = "") -> Alert | None:
    """The night's alert, or None when no incident pages (new ones, and open ones that grew tonight) and none ended.
    Its first lines are the report's: each regressed config, its component, the exact change and the two builds; an
    incident that ended tonight is said once, with the build it ended under (an all-clear when nothing pages)."""
    paging = [i for i in summary.incidents if i.pages]
    ended = [i for i in summary.incidents if not i.is_new and i.resolution()]
    if not paging and not ended:
        return None
    headlines = [line for i in paging for line in i.headlines()]
    subject = (f"vramwatch {summary.night}: {len(headlines)} regression(s) {_blamed(paging)}" if paging
               else f"vramwatch {summary.night}: all clear, {len(ended)} incident(s) resolved")
    link = report_link(summary, base_url)
    lines = [*headlines, *(i.resolution() for i in ended), ""]
    for incident in paging:
        lines.append(f"- {incident_line(incident)}{' (grew tonight)' if incident.escalated else ''}\n  {incident.summary}")
        lines += [f"  {line}" for line in (bisection_lines(incident.bisection) if incident.bisection else [])]
    lines += ["", f"Report: {link}", f"Run: {summary.run_id}"]
    payload = {
        "event": "regression" if paging else "resolved", "night": summary.night, "run_id": summary.run_id,
        "report": link, "report_md": summary.report_md, "report_html": summary.report_html, "headlines": headlines,
        "incidents": [i.to_dict() for i in paging], "resolved": [i.to_dict() for i in ended],
    }
    return Alert(subject=subject, text="\n".join(lines), payload=payload)


def bisection_lines(result: BisectResult) -> list[str]:
    """What a bisection found, in a few lines: the headline, the culprit's link, and how it got there."""
    lines = [f"Bisection of {config_name(result.config_id)}: {result.headline()}"]
    if result.culprit is not None:
        culprit = result.culprit
        lines.append(f"Culprit: {culprit.ref}" + (f" ({culprit.date})" if culprit.date else "") + f" {culprit.link}")
    if result.commit_range:
        lines.append(f"llama.cpp range to bisect next: {result.commit_range}")
    lines.append(f"{result.cost} ({result.candidates} candidates between {result.good} and {result.bad})")
    return lines


def bisection_alert(result: BisectResult, incident_id: int | None) -> Alert:
    """The follow-up to a regression alert: which release or commit made the change, or where the search stopped."""
    found = f"culprit {result.culprit.ref}" if result.culprit else "bisection stopped"
    subject = f"vramwatch: {config_name(result.config_id)} {result.metric}: {found}"
    incident = f"incident #{incident_id}" if incident_id is not None else "no incident"
    payload = {"event": "bisection", "run_id": f"bisect-{incident_id}-{result.started_at}", "incident_id": incident_id,
               "result": result.to_dict()}
    return Alert(subject=subject, text="\n".join([*bisection_lines(result), f"For {incident}"]), payload=payload)


def failure_alert(night: str, run_id: str, failed: str, error: str, log_url: str = "") -> Alert:
    """A nightly that did not finish (a failed task, or the whole run): someone must look before tomorrow."""
    subject = f"vramwatch {night}: nightly failed at {failed}"
    lines = [subject, "", f"Run: {run_id}", f"Error: {error or 'unknown'}"]
    if log_url:
        lines.append(f"Log: {log_url}")
    payload = {"event": "failure", "night": night, "run_id": run_id, "failed": failed, "error": error,
               "log_url": log_url}
    return Alert(subject=subject, text="\n".join(lines), payload=payload)


def failure_from_context(context: dict[str, Any]) -> Alert:
    """The failure alert for an Airflow failure callback's context (read as a plain dict: no Airflow import)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    night = str(context.get("ds") or getattr(dag_run, "logical_date", "") or "")[:10]
    return failure_alert(night=night, run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "")),
                         failed=str(getattr(ti, "task_id", "") or "the DAG run"),
                         error=str(context.get("exception") or context.get("reason") or ""),
                         log_url=str(getattr(ti, "log_url", "") or ""))
