"""write_report: one run's Markdown and HTML under reports/<night>/<run>/ (run_folder), copied to the night's latest
(reports/<night>/summary.{md,html}) and to reports/latest.{md,html}.

Each run of a night has its folder, its report and its Data Docs, so a second run of the night never overwrites the
first's. Nights written before runs had folders keep reports/<night>/summary.* and data_docs/, which stay readable
where they are. Pure over records and the history frame (the warehouse wrapper `report_for_run` sits at the end).
The latest copies are plain files, not symlinks (the DAG, tests and people opening them from a checkout all read
plain files), written with their links pointing into the run's folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from vramwatch.config import Prices
from vramwatch.records import (
    BenchResult,
    ExpectationOutcome,
    NightSummary,
    NightVerdicts,
    QuarantinedResult,
    RunRecord,
)
from vramwatch.redact import redact
from vramwatch.report import history_chart, markdown, plots, style
from vramwatch.report.cost import cheapest_table, cost_table
from vramwatch.report.history_chart import HISTORY_RUNS
from vramwatch.report.tables import (
    Table,
    ab_table,
    bisections_table,
    changes_table,
    device_of,
    fits_table,
    gpu_tables,
    incidents_table,
    key_findings,
    not_judged_table,
    not_separable_lines,
    quality_table,
    quarantine_table,
    resolution_lines,
    seed_table_rows,
    seed_tables,
    sweep_tables,
    top_lines,
    validation_table,
)
from vramwatch.rows import COMPARED

if TYPE_CHECKING:
    from vramwatch.warehouse.store import Warehouse

TEMPLATES = Path(__file__).with_name("templates")
DATA_DOCS_INDEX = "data_docs/index.html"  # under the run's folder: where the pipeline has the validate step build them
# The flat-row fields its tables and plots read from history (HISTORY_RUNS good runs per config and machine: the
# change table needs the previous run, the history plot draws that many): every compared figure, the change table's
# NVML cross-check, the quality table's hash and the history plot's panels; the wide JSON ones stay in the warehouse.
HISTORY_FIELDS = tuple(dict.fromkeys((*(f.name for f in COMPARED), "nvml_process_mib", "greedy_sha256",
                                    *history_chart.REPORT_PANELS)))


def run_folder(reports: Path, night: str, run_id: str) -> Path:
    """reports/<night>/<run>/: one run's report and Data Docs (a run id may hold "/" or ":", a folder name does not)."""
    return reports / night / re.sub(r"[^\w.-]", "_", run_id)


def _inline(text: str) -> Markup:
    """Markdown's **bold** as <strong>, everything else escaped."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["inline"] = _inline
    return env


def header_lines(run: RunRecord, results: Sequence[BenchResult]) -> list[tuple[str, str]]:
    reps = sorted({r.config.reps for r in results})
    return [
        ("Test Date", run.night),
        ("Build", f"llama-cpp-python {run.llama_cpp_python_version or run.build_version} with llama.cpp "
                  f"{run.llama_cpp_commit or 'unknown'} ({run.backend or 'unknown'} backend)"),
        ("Device", device_of(results)),
        ("Runs per config", "N=" + "/".join(map(str, reps)) + " (averaged below)" if reps else "none"),
        ("Results", f"{len(results)} stored, {run.n_quarantined} quarantined (run {run.run_id})"),
    ]


def write_report(run: RunRecord, results: Sequence[BenchResult], history: pd.DataFrame, verdicts: NightVerdicts,
                 out_dir: Path | str, quarantined: Sequence[QuarantinedResult] = (),
                 notices: Sequence[str] = (), validation: Sequence[ExpectationOutcome] = (),
                 refresh_latest: bool = True, night_latest: bool = True, prices: Prices = Prices()
                 ) -> tuple[Path, Path]:
    """Write the run's summary.{md,html} in its folder (run_folder), copy them to the night's latest
    (reports/<night>/summary.*) unless night_latest is False (a newer run of the night has its report there), and to
    reports/latest.{md,html} unless refresh_latest is False (an older night written again must not replace a newer
    one's); returns the run's two paths.

    history is the history of this run's configs (Warehouse.history() or recent_history(); it must hold the run).
    notices are warnings the report shows above everything else (e.g. that no alert channel is configured).
    validation: how each expectation of the night's suite came out (a section of its own, linking the night's
    Data Docs when they are there: the run's, else those a night kept before runs had folders).
    prices: the matrix's (config.Prices), for the cost per million tokens; none given, no cost sections.
    """
    incidents = verdicts.incidents
    out_dir = Path(out_dir)
    night_dir, run_dir = out_dir / run.night, run_folder(out_dir, run.night, run.run_id)
    rows = seed_table_rows(results)
    sections: list[Table] = [*seed_tables(rows), *gpu_tables(results), fits_table(results)]
    sections += [t for t in (cost_table(results, prices), cheapest_table(results, prices)) if t]
    change = changes_table(history, run.run_id) if run.run_id in set(history["run_id"]) else None
    sections += [change] if change else []
    quality = quality_table(results, history, run.run_id)
    sections += [quality] if quality else []
    sections += [*sweep_tables(results), incidents_table(incidents)]
    sections += [t for t in (bisections_table(incidents), ab_table(verdicts.ab), not_judged_table(verdicts.not_judged),
                             quarantine_table(quarantined)) if t]
    title = f"vramwatch nightly: {run.night}"
    header = header_lines(run, results)
    findings = key_findings(rows, results, incidents)
    top = not_separable_lines(incidents) + top_lines(verdicts) + resolution_lines(incidents)

    drawn = {"VRAM by component (stacked)": plots.vram_by_component(results),
             "Baseline vs offload": plots.baseline_vs_offload(rows),
             "History per config (red: incident opened)": history_chart.history(history, incidents),
             "Partial offload sweep: VRAM and tg against n_cpu_moe": plots.sweep(results)}
    template = _environment().get_template("summary.html.j2")
    docs = next((folder / DATA_DOCS_INDEX for folder in (run_dir, night_dir) if (folder / DATA_DOCS_INDEX).is_file()),
                None)

    def render(folder: Path) -> tuple[str, str]:
        """The Markdown and HTML, their links relative to `folder` (the one they are written in)."""
        checked = validation_table(validation, Path(os.path.relpath(docs, folder)).as_posix() if docs else None)
        tables = sections + ([checked] if checked else [])
        html = template.render(
            css=Markup(style.CSS), title=title, notices=notices, top=top, header=header, findings=findings,
            sections=tables, plots=[figure for figure in drawn.values() if figure],
            missing_plots=[caption for caption, figure in drawn.items() if not figure])
        return markdown.render(title, top, header, findings, tables, notices), html

    run_dir.mkdir(parents=True, exist_ok=True)
    written = [(run_dir, "summary")]
    if night_latest:
        written.append((night_dir, "summary"))
    if refresh_latest:
        written.append((out_dir, "latest"))
    for folder, name in written:
        md, html = render(folder)
        _replace(folder / f"{name}.md", redact(md))  # an error string may quote a URL with its token
        _replace(folder / f"{name}.html", redact(html))
    return run_dir / "summary.md", run_dir / "summary.html"


def _replace(path: Path, text: str) -> None:
    """Temp file, then rename: two runs of a night writing its latest at once leave one whole report, never a mix."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as partial:
        partial.write(text)
    os.replace(partial.name, path)


def report_for_run(warehouse: Warehouse, run_id: str, verdicts: NightVerdicts,
                   reports_dir: Path | str, notices: Sequence[str] = (), refresh_latest: bool = True,
                   prices: Prices = Prices()) -> NightSummary:
    """Read the run, its validation outcomes and its configs' recent history from the warehouse, write the report,
    return the night summary. `verdicts`: tonight's, or a night's as the warehouse keeps them (Warehouse.verdicts:
    its incidents as they are now, a bisection stored since included)."""
    run = warehouse.run(run_id)
    results = warehouse.results_for_run(run_id)
    history = warehouse.recent_history({r.config.config_id for r in results}, HISTORY_RUNS, until_run=run_id,
                                       fields=HISTORY_FIELDS)
    newest = warehouse.latest_run(run.night, lane=warehouse.lane(run_id))
    md_path, html_path = write_report(run, results, history, verdicts, reports_dir,
                                      warehouse.quarantined_for_run(run_id), notices,
                                      warehouse.expectations(run_id), refresh_latest,
                                      night_latest=newest is None or newest.run_id == run_id, prices=prices)
    return NightSummary(night=run.night, run_id=run_id, report_md=str(md_path), report_html=str(html_path),
                        n_results=len(results), n_quarantined=run.n_quarantined, incidents=list(verdicts.incidents))
