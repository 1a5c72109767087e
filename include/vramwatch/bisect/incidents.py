"""Which of a night's incidents a bisection can explain, and the request that searches each one's culprit."""

from __future__ import annotations

from vramwatch.config import Matrix
from vramwatch.progress import for_stage
from vramwatch.records import BisectLevel, BisectRequest, IncidentKind, NightVerdicts

_say = for_stage("vramwatch")

# The incidents a bisection can explain: a buffer or a speed that changed between two builds.
BISECTABLE = (IncidentKind.VRAM, IncidentKind.THROUGHPUT)


def bisections_to_start(verdicts: NightVerdicts, matrix: Matrix, run_id: str,
                        releases: dict[str, str]) -> list[BisectRequest]:
    """One request for each incident opened tonight (run `run_id`) that a bisection can explain: its first config,
    between the builds the incident names (their releases, by `releases` (llama.cpp commit -> the release that
    vendors it), or their llama.cpp commits for a git source), and the run whose report shows the result."""
    level: BisectLevel = "commit" if matrix.build.source == "git" else "release"
    requests = []
    for incident in verdicts.incidents:
        if not (incident.is_new and incident.pages and incident.kind in BISECTABLE and incident.incident_id):
            continue
        ends = (incident.build_before, incident.build_after)
        good, bad = ends if level == "commit" else (releases.get(ends[0]), releases.get(ends[1]))
        if not (good and bad) or good == bad:
            _say(f"bisect: incident #{incident.incident_id} lies between no two known {level}s ({good} -> {bad}): "
                 "not bisected")
            continue
        requests.append(BisectRequest(config=incident.configs[0], good=good, bad=bad, level=level,
                                      metric=incident.metric, incident_id=incident.incident_id, run_id=run_id))
    _say(f"bisect: {len(requests)} new incident(s) to bisect")
    return requests
