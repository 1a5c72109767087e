"""The validation gate: a Great Expectations suite over a night's results; failing rows go to quarantine.

GX Core is called directly with an ephemeral context (the GX Airflow provider cannot install next to Airflow 3.3)
and imported inside validate_night, because DAG files import this package and must import fast.

Every expectation carries a short name in its meta; a row is quarantined with the names of all it failed, found
through `unexpected_index_list` on the row_id column. Rows that did not run (oom, timeout, crashed, ...) are valid
history when their status and error are sane: the measurement expectations apply to ok rows only.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vramwatch.records import (
    ENERGY_PREDATES_WORKER,
    EXPECTED_ON_GPU,
    MODES,
    STATUSES,
    BenchResult,
    ExpectationOutcome,
    QuarantinedResult,
    ValidatedNight,
)
from vramwatch.validate.frame import ROW_ID, context_per_gpu, validation_frame

log = logging.getLogger(__name__)

SUITE = "vramwatch_night"
DOCS_SITE = "vramwatch"
# NVML's process memory exceeds llama.cpp's GPU buffers by what they do not count: the CUDA context, cuBLAS workspace
# and ggml's pool, about 0.7 GiB on an H200 (695-715 MiB in all 26 committed H200 results). Beyond 4 GiB the
# buffers missed a large allocation or NVML counted something else: either way the VRAM figure is not to be trusted.
NVML_MARGIN_MIB = 4096
# That context is stable on one GPU (695-715 MiB across all 26 H200 results: configs, modes, builds), so where a GPU
# ran at least LEARN_FROM ok rows with NVML tonight, their median excess plus CONTEXT_SLACK_MIB bounds each of them: a
# config whose buffers missed an allocation (a compute or KV buffer is hundreds of MiB) stands out of its night instead
# of hiding in 4 GiB. Learned from the night's own rows, not the warehouse: validation runs before the store and must
# not wait on the warehouse's locks (a stuck warehouse fails the store in seconds, tests/unit/warehouse).
LEARN_FROM = 5
CONTEXT_SLACK_MIB = 128.0
EXAMPLES = 3  # failing rows an expectation's outcome names
# What GX's Data Docs load from CDNs (Bootstrap, jQuery, Vega, Font Awesome, its logo) and link to on the web: the
# tags that load one, and href attributes that point at one. Offline and under the UI's policy none of them load.
_EXTERNAL_TAG = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//[^>]*>(?:\s*</script>)?""",
                           re.IGNORECASE)
_EXTERNAL_HREF = re.compile(r"""\s(?:href|src)=["']?(?:https?:)?//[^"'\s>]*["']?""", re.IGNORECASE)
PAGE_LIST_ID = "vramwatch-pages"
_PAGE_LIST = re.compile(rf'<section id="{PAGE_LIST_ID}">.*?</section>', re.DOTALL)
_EXTERNAL_CSS_URL = re.compile(r"""url\(\s*["']?(?:https?:)?//[^)]*\)""", re.IGNORECASE)


class ValidationSuiteError(RuntimeError):
    """An expectation could not be evaluated at all: a defect in the suite, not in the data."""


def expectations(build_backend: str | None = None) -> list[tuple[str, Any]]:
    """(name, expectation) pairs of the suite, in the order they are reported. build_backend: the backend the night's
    engine was built for (cpu, cuda); None leaves out the check that results ran on it."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    ok = Column("status") == "ok"
    # every mode keeps at least the non-expert weights, the KV cache and a compute buffer on the GPU when layers are
    # offloaded to one (records.EXPECTED_ON_GPU)
    layers_on_gpu = ok & (Column("backend") != "cpu") & (Column("n_gpu_layers") > 0)
    missing = "either_value_is_missing"  # pair checks skip rows without the measurement (no GPU, no NVML, no file)
    suite: list[tuple[str, Any]] = [
        *[(f"{c}_present", gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in ("model", "quant", "mode", "status")],
        ("status_known", gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES))),
        ("mode_known", gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(MODES))),
        ("config_unique", gxe.ExpectColumnValuesToBeUnique(column="config_id")),
        ("values_fit_columns", gxe.ExpectColumnValuesToBeNull(column="too_long")),  # validate.frame._too_long
        ("error_explained", gxe.ExpectColumnValuesToNotBeNull(column="error", row_condition=Column("status") != "ok")),
        # ok rows only: the bench parent reports timeouts and crashes without the child's view of the machine
        ("fingerprint_present", gxe.ExpectColumnValuesToBeInSet(column="has_fingerprint", value_set=[True],
                                                                 row_condition=ok)),
    ]
    if build_backend is not None:  # a CUDA engine that ran on the CPU (a worker that lost its GPU) is not its result
        suite.append(("backend_matches_build", gxe.ExpectColumnValuesToBeInSet(
            column="backend", value_set=[build_backend], row_condition=ok)))
    for test in ("pp", "tg"):
        suite += [
            (f"{test}_measured", gxe.ExpectColumnValuesToNotBeNull(column=f"{test}_avg_ts", row_condition=ok)),
            (f"{test}_tok_s_positive", gxe.ExpectColumnValuesToBeBetween(
                column=f"{test}_avg_ts", min_value=0, strict_min=True, row_condition=ok)),
            (f"{test}_all_repetitions", gxe.ExpectColumnPairValuesToBeEqual(
                column_A=f"{test}_n_samples", column_B="reps", ignore_row_if=missing, row_condition=ok)),
        ]
    suite += [
        ("vram_non_negative", gxe.ExpectColumnValuesToBeBetween(column="vram_gib", min_value=0)),
        ("vram_within_gpu_total", gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="gpu_total_gib", column_B="vram_gib", or_equal=True, ignore_row_if=missing)),
        ("offload_below_baseline_vram", gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="baseline_vram_gib", column_B="vram_gib", ignore_row_if=missing,
            row_condition=ok & (Column("mode") == "offload") & (Column("n_expert") > 0))),
        # llama.cpp's buffers are the VRAM figures: an ok row without them (or, on a GPU, without its GPU weights, KV
        # or compute buffer) is a log that did not parse, not a config that needs no memory. Older workers stored
        # such rows as ok, and a component at 0 reads as a -100 % improvement, then as a regression the next night.
        ("buffers_parsed", gxe.ExpectColumnValuesToBeBetween(column="n_buffers", min_value=1, row_condition=ok)),
        *[(f"gpu_{kind}_buffer_measured", gxe.ExpectColumnValuesToBeBetween(
            column=f"gpu_{kind}_mib", min_value=0, strict_min=True, row_condition=layers_on_gpu))
          for kind in EXPECTED_ON_GPU],
        # ... and on each of its GPUs (records.expected_gpu_devices): a split whose second GPU's KV line did not
        # parse would otherwise pass on the first GPU's
        ("gpu_buffers_on_each_gpu", gxe.ExpectColumnValuesToBeNull(column="gpu_buffers_missing",
                                                                   row_condition=layers_on_gpu)),
        # rows without an NVML process figure have no value here and are skipped
        ("nvml_agrees_with_buffers", gxe.ExpectColumnValuesToBeBetween(
            column="nvml_beyond_buffers_mib", min_value=0, max_value=NVML_MARGIN_MIB)),
        # ... and, where enough rows ran on the GPU tonight, no further than its CUDA context (learned_nvml_margins)
        ("nvml_within_gpu_context", gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="nvml_margin_mib", column_B="nvml_beyond_buffers_mib", or_equal=True, ignore_row_if=missing)),
        # the bench reads the file's size on its worker (validation runs on another): an ok row must say what it read
        ("file_size_checked", gxe.ExpectColumnValuesToNotBeNull(column="file_bytes_on_disk", row_condition=ok)),
        ("file_size_matches_disk", gxe.ExpectColumnPairValuesToBeEqual(
            column_A="file_bytes", column_B="file_bytes_on_disk", ignore_row_if=missing)),
    ]
    # a GPU row carries energy, unless a worker older than energy readings measured it (an old measured night)
    suite += _energy_expectations(gxe, ok & (Column("backend") != "cpu")
                                  & (Column("energy_gpu_reason") != ENERGY_PREDATES_WORKER))
    return suite


def _energy_expectations(gxe: Any, ok_on_gpu: Any) -> list[tuple[str, Any]]:
    """Energy (issue 27): measured on every ok GPU row, each test's average power within the board's limit (a
    figure past it is a counter or a window gone wrong: the board cannot draw it for a second)."""
    found = []
    for test in ("pp", "tg"):
        found += [
            (f"{test}_energy_measured", gxe.ExpectColumnValuesToNotBeNull(column=f"{test}_j_per_tok",
                                                                          row_condition=ok_on_gpu)),
            (f"{test}_power_within_limit", gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="gpu_power_limit_w", column_B=f"{test}_power_avg_w", or_equal=True,
                ignore_row_if="either_value_is_missing")),
        ]
    return found


def _context(gx: Any) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # GX 1.24 ships no analytics client, only this flag; progress bars would fill task logs.
    return gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    ))


# unexpected_index_list names each failing row by its row_id; GX's pandas query that would select them again is not
# used and costs about 15 % of a validation
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID],
                 "return_unexpected_index_query": False}


@dataclass(frozen=True)
class _PreparedSuite:
    """An ephemeral context holding the suite for one build backend, and the frame columns the suite reads."""

    context: Any
    batch: Any  # the batch definition a night's frame is handed to
    suite: Any
    columns: frozenset[str]


def _prepare(build_backend: str | None) -> _PreparedSuite:
    import great_expectations as gx

    context = _context(gx)
    batch = context.data_sources.add_pandas("night").add_dataframe_asset("results") \
        .add_batch_definition_whole_dataframe("all_rows")
    named = expectations(build_backend)
    for name, expectation in named:
        expectation.meta = {"name": name}
    # handed over whole: add_expectation compares each with all added before it (the suite is a set), about 8 % of a
    # night's validation, and the suite's expectations all differ anyway
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE, expectations=[e for _name, e in named]))
    # GX filters the whole frame for every row condition of every metric: handing it only the columns the suite reads
    # (about a third) makes a night's validation about 30 % cheaper and changes no outcome.
    columns = frozenset({ROW_ID}.union(*(_columns_read(expectation) for expectation in suite.expectations)))
    return _PreparedSuite(context, batch, suite, columns)


# A night without Data Docs reuses its process's context and validates its batch directly: a fresh context, suite and
# checkpoint per night cost about a tenth of a validation, and Batch.validate keeps nothing in the context. A night
# with Data Docs gets a fresh one, whose site lists that night alone.
_prepared = functools.cache(_prepare)
_PREPARED_LOCK = threading.Lock()


def _run_suite(frame: Any, data_docs_dir: Path | None, build_backend: str | None,
               config_names: list[str]) -> tuple[dict[int, list[str]], list[ExpectationOutcome], str]:
    """Failed expectation names per row_id, each expectation's outcome, and the Data Docs index (empty when not
    built)."""
    if data_docs_dir is None:
        with _PREPARED_LOCK:
            prepared = _prepared(build_backend)
            checks = prepared.batch.get_batch(batch_parameters={"dataframe": _narrowed(frame, prepared)}) \
                .validate(prepared.suite, result_format=RESULT_FORMAT).results
    else:
        prepared = _prepare(build_backend)
        checks = _run_with_data_docs(_narrowed(frame, prepared), prepared, data_docs_dir)

    failures: dict[int, list[str]] = defaultdict(list)
    outcomes = []
    for check in checks:
        name = check.expectation_config.meta["name"]
        if check.exception_info.get("raised_exception"):
            raise ValidationSuiteError(f"expectation {name} could not run: "
                                       f"{check.exception_info.get('exception_message')}")
        unexpected = check.result.get("unexpected_index_list") or []
        for row in unexpected:
            failures[int(row[ROW_ID])].append(name)
        outcomes.append(_outcome(name, check, unexpected, config_names))
    order = {expectation.meta["name"]: i for i, expectation in enumerate(prepared.suite.expectations)}
    outcomes.sort(key=lambda o: order[o.name])  # the suite's order, not GX's
    index = data_docs_dir / "index.html" if data_docs_dir is not None else None
    return failures, outcomes, str(index) if index is not None and index.is_file() else ""


def _narrowed(frame: Any, prepared: _PreparedSuite) -> Any:
    return frame[[column for column in frame.columns if column in prepared.columns]]


def _run_with_data_docs(frame: Any, prepared: _PreparedSuite, data_docs_dir: Path) -> list[Any]:
    """The suite's results through a checkpoint whose action writes Data Docs (made offline) into data_docs_dir."""
    import great_expectations as gx

    context = prepared.context
    data_docs_dir.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(site_name=DOCS_SITE, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    definition = gx.ValidationDefinition(name=SUITE, data=prepared.batch, suite=prepared.suite)
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=SUITE, validation_definitions=[context.validation_definitions.add(definition)],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
        result_format=RESULT_FORMAT,
    ))
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    make_offline(data_docs_dir)
    return [check for validation in outcome.run_results.values() for check in validation.results]


def _columns_read(expectation: Any) -> set[str]:
    """The frame columns an expectation reads: its own and those of its row condition."""
    found = {getattr(expectation, key, None) for key in ("column", "column_A", "column_B")}
    pending = [expectation.row_condition.dict()] if expectation.row_condition is not None else []
    while pending:  # a condition is a comparison on a column, or an and/or of conditions
        condition = pending.pop()
        found.add(condition.get("column", {}).get("name"))
        pending += condition.get("conditions", [])
    return found - {None}


def _outcome(name: str, check: Any, unexpected: list[dict[str, Any]], config_names: list[str]) -> ExpectationOutcome:
    """An expectation's result as the report shows it; each example is a failing row's config and its values, as
    the row holds them (the frame HTML-escaped them for Data Docs; the report escapes what it shows itself)."""
    kwargs = check.expectation_config.kwargs
    columns = [kwargs[key] for key in ("column", "column_A", "column_B") if kwargs.get(key)]
    examples = [f"{config_names[int(row[ROW_ID])]}: " + ", ".join(f"{k}={html.unescape(str(v))}"
                                                                 for k, v in row.items() if k != ROW_ID)
                for row in unexpected[:EXAMPLES]]
    return ExpectationOutcome(name=name, expectation=check.expectation_config.type, columns=columns,
                              success=bool(check.success), unexpected_count=check.result.get("unexpected_count"),
                              unexpected_examples=[e.rstrip(": ") for e in examples])


def make_offline(data_docs_dir: Path) -> None:
    """Rewrite Data Docs so that they load nothing from another host: drop every tag that loads a CDN asset, every
    link to the web and every CSS url() off this host. What stays is their HTML and their own local stylesheet
    (allowed by the UI's policy as 'self'); their tables read plain. The index's tables are filled by script (which
    neither runs offline nor under the UI's policy), so the index also gets a plain list of links to every page."""
    for page in data_docs_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        text = _EXTERNAL_CSS_URL.sub("none", _EXTERNAL_HREF.sub("", _EXTERNAL_TAG.sub("", text)))  # inline <style>s
        page.write_text(text, encoding="utf-8")
    for sheet in data_docs_dir.rglob("*.css"):
        sheet.write_text(_EXTERNAL_CSS_URL.sub("none", sheet.read_text(encoding="utf-8")), encoding="utf-8")
    index = data_docs_dir / "index.html"
    if index.is_file():
        pages = sorted(p.relative_to(data_docs_dir).as_posix() for p in data_docs_dir.rglob("*.html") if p != index)
        links = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>' for p in pages)
        text = _PAGE_LIST.sub("", index.read_text(encoding="utf-8"))  # GX may keep an index we listed before
        index.write_text(text.replace("</body>", f'<section id="{PAGE_LIST_ID}"><h2>Every page (no script needed)'
                                                 f'</h2><ul>{links}</ul></section></body>', 1), encoding="utf-8")


def learned_nvml_margins(results: list[BenchResult]) -> dict[str, float]:
    """GPU name -> how far NVML's process memory may exceed llama.cpp's GPU buffers on it tonight: the median excess
    of its ok rows plus CONTEXT_SLACK_MIB, for GPUs with at least LEARN_FROM such rows. The median, so that the rows
    that missed a buffer do not set the norm."""
    excess: dict[str, list[float]] = defaultdict(list)
    for result in results:
        context = context_per_gpu(result)
        if result.ok and context is not None and result.fingerprint.gpu_name:
            excess[result.fingerprint.gpu_name].append(context)
    return {gpu: round(statistics.median(values) + CONTEXT_SLACK_MIB, 2) for gpu, values in excess.items()
            if len(values) >= LEARN_FROM}


def validate_night(results: list[BenchResult], gpu_total_mib: float | None = None,
                   data_docs_dir: Path | None = None, build_backend: str | None = None) -> ValidatedNight:
    """Split a night's results into accepted rows and quarantined rows (with the expectations each failed).

    gpu_total_mib overrides the GPU size each row reports (None: use the row's own NVML figure, if any).
    data_docs_dir, when given, receives GX Data Docs HTML (index.html) for the night, made to load nothing from
    another host (make_offline).
    build_backend is the backend of the build that ran the night (BuildRequest.backend): ok rows measured on another
    are quarantined. The pipeline always passes it; None (results without their build) skips that check.
    NVML beyond the buffers is bounded per GPU by what its other rows show tonight (learned_nvml_margins), and by
    NVML_MARGIN_MIB where too few ran.
    """
    if not results:
        return ValidatedNight(accepted=[], quarantined=[])
    frame = validation_frame(results, gpu_total_mib, learned_nvml_margins(results))
    failures, outcomes, docs = _run_suite(frame, data_docs_dir, build_backend, [r.config.config_name for r in results])
    accepted = [r for i, r in enumerate(results) if i not in failures]
    quarantined = [QuarantinedResult(r, failures[i]) for i, r in enumerate(results) if i in failures]
    for q in quarantined:
        log.warning("quarantined %s (%s): failed %s", q.result.config.config_id, q.result.status,
                    ", ".join(q.failed_expectations))
    return ValidatedNight(accepted=accepted, quarantined=quarantined, data_docs_path=docs, expectations=outcomes)
