"""The report's tables as data: the seed table per model, fits-on-a-GPU, change against the previous build, the
partial-offload sweep, and key findings. Pure functions over records and the history frame; markdown.py and the
HTML template render the same `Table`s, so both reports always say the same thing.

Every header and cell takes its words, unit and format from the flat row's fields (vramwatch.rows): sizes are binary
(MiB, GiB), VRAM is llama.cpp's GPU model + KV + compute buffers. Where no GPU was measured a cell says "no GPU";
where a config failed it shows its status: never a zero that looks measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from vramwatch.config import COMPONENT_KINDS, VRAM_COMPONENTS
from vramwatch.records import (
    SEED_MODES,
    ABComparison,
    BenchResult,
    ExpectationOutcome,
    Incident,
    NightVerdicts,
    QuarantinedResult,
    Record,
    config_name,
    gpu_buffers_by_device,
)
from vramwatch.rows import AB_JUDGED, BY_NAME, COMPARED, MIB_UNIT, MISSING, number, split_tonight, words_of

NO_GPU = "no GPU"
GPU_SIZES_GIB = (8, 12, 16, 24, 48, 80, 141)
VRAM, FILE_SIZE, PP, TG = (BY_NAME[name] for name in ("vram_gib", "file_bytes", "pp_avg_ts", "tg_avg_ts"))
SPEEDS = {"pp_ts": PP, "tg_ts": TG}  # ModeNumbers' speeds and the fields they hold
# The change table's columns beside the GPU buffers cell: every compared figure that is not a buffer (in MiB).
CHANGE_RATES = tuple(f for f in COMPARED if f.unit != MIB_UNIT)
NVML = BY_NAME["nvml_process_mib"]  # the change table's cross-check of the buffers


def heading(*words: str) -> str:
    """A column header: the words as a title ("file size" -> "File Size"); abbreviations and units stay as written."""
    return " ".join(w.capitalize() if w.isalpha() and w.islower() and len(w) > 2 else w for w in " ".join(words).split())


def field_heading(name: str, *after: str) -> str:
    return heading(BY_NAME[name].words, *after)


SEED_HEADER = [field_heading("quant"), field_heading("file_bytes"),
               *(heading(VRAM.words, what) for what in ("baseline", "offload", "saved")), "Reduction %",
               *(heading(speed.words, speed.unit, mode) for mode in SEED_MODES for speed in SPEEDS.values()),
               BY_NAME["reps"].words]


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    link: tuple[str, str] | None = None  # (text, relative href) shown under the table


@dataclass(frozen=True)
class ModeNumbers(Record):
    """One mode of one model x quant: its status and, when ok, what it measured (None = not measured)."""

    status: str
    vram_gib: float | None = None
    pp_ts: float | None = None
    tg_ts: float | None = None
    reps: int = 0


@dataclass(frozen=True)
class SeedRow(Record):
    """One line of the seed's table: a model at one quantization, baseline against offload."""

    model: str
    quant: str
    file_bytes: int | None  # None: the models stage made no file (a figure not measured is absent, not 0)
    has_gpu: bool
    baseline: ModeNumbers | None = None
    offload: ModeNumbers | None = None
    vram_saved_gib: float | None = None
    reduction_pct: float | None = None


def _mode_numbers(result: BenchResult) -> ModeNumbers:
    if not result.ok:
        return ModeNumbers(status=result.status, reps=result.config.reps)
    return ModeNumbers(status="ok", vram_gib=result.memory.vram_gib, pp_ts=result.pp.avg_ts if result.pp else None,
                       tg_ts=result.tg.avg_ts if result.tg else None, reps=result.config.reps)


def seed_table_rows(results: Sequence[BenchResult]) -> list[SeedRow]:
    """The seed table as data, one row per model x quant in the order results came (partial modes left out)."""
    cells: dict[tuple[str, str], dict[str, BenchResult]] = {}
    for r in results:
        if r.config.mode in SEED_MODES and r.config.gpus == 1:  # several GPUs: the per-GPU table
            cells.setdefault((r.config.model.model, r.config.model.quant), {})[r.config.mode] = r
    rows = []
    for (model, quant), modes in cells.items():
        first = next(iter(modes.values()))
        baseline, offload = (_mode_numbers(modes[m]) if m in modes else None for m in SEED_MODES)
        has_gpu = any(r.memory.has_gpu or r.fingerprint.gpu_count > 0 for r in modes.values())
        saved = reduction = None
        if baseline and offload and baseline.vram_gib is not None and offload.vram_gib is not None:
            saved = baseline.vram_gib - offload.vram_gib
            reduction = 100.0 * saved / baseline.vram_gib if baseline.vram_gib else None
        rows.append(SeedRow(model=model, quant=quant, file_bytes=first.config.model.file_bytes or None, has_gpu=has_gpu,
                            baseline=baseline, offload=offload, vram_saved_gib=saved, reduction_pct=reduction))
    return rows


# --------------------------------------------------------------------------------------------- cell formats


NO_FILE = "no file"


def gib(value: float | None, has_gpu: bool) -> str:
    """A VRAM figure (GiB), or why there is none."""
    return VRAM.text(value) if has_gpu else NO_GPU


def _vram_cell(mode: ModeNumbers | None, has_gpu: bool) -> str:
    if mode is None:
        return MISSING
    return mode.status if mode.status != "ok" else gib(mode.vram_gib, has_gpu)


def _speed_cell(mode: ModeNumbers | None, which: str) -> str:
    if mode is None:
        return MISSING
    if mode.status != "ok":
        return mode.status
    return SPEEDS[which].number(getattr(mode, which))


def seed_tables(rows: Sequence[SeedRow]) -> list[Table]:
    tables: dict[str, list[list[str]]] = {}
    for row in rows:
        reps = sorted({m.reps for m in (row.baseline, row.offload) if m})
        reduction = (NO_GPU if not row.has_gpu else
                     MISSING if row.reduction_pct is None else f"**{row.reduction_pct:.1f}%**")
        tables.setdefault(row.model, []).append([
            f"**{row.quant}**", FILE_SIZE.text(row.file_bytes) if row.file_bytes else NO_FILE, _vram_cell(row.baseline, row.has_gpu),
            _vram_cell(row.offload, row.has_gpu),
            gib(row.vram_saved_gib, row.has_gpu) if row.has_gpu else NO_GPU, reduction,
            _speed_cell(row.baseline, "pp_ts"), _speed_cell(row.baseline, "tg_ts"),
            _speed_cell(row.offload, "pp_ts"), _speed_cell(row.offload, "tg_ts"), "/".join(map(str, reps)),
        ])
    return [Table(f"{model} Quantizations", SEED_HEADER, body) for model, body in tables.items()]


# --------------------------------------------------------------------------------------------- fits on a GPU


def needed_mib(result: BenchResult) -> float | None:
    """GPU memory an ok config needs (Memory.needed_mib); None without a GPU or without a result."""
    return result.memory.needed_mib if result.ok else None


def fits_table(results: Sequence[BenchResult]) -> Table:
    """Per model x quant and GPU size, the cheapest mode that fits (baseline beats offload: it is faster); below them,
    each config on several GPUs: whether it fits on N cards of each size (every card's own need within it)."""
    by_cell: dict[tuple[str, str], dict[str, float | None]] = {}
    for r in results:
        if r.config.mode in SEED_MODES and r.config.gpus == 1:
            by_cell.setdefault((r.config.model.model, r.config.model.quant), {})[r.config.mode] = needed_mib(r)
    has_gpu = any(r.memory.has_gpu for r in results)
    rows = []
    for (model, quant), need in by_cell.items():
        cells = []
        for gib_size in GPU_SIZES_GIB:
            fitting = [m for m in SEED_MODES if need.get(m) is not None and need[m] <= gib_size * 1024]
            cells.append(NO_GPU if not has_gpu else fitting[0] if fitting else "does not fit")
        rows.append([model, quant, *cells])
    rows += [[r.config.model.model, f"{r.config.model.quant} {r.config.mode_label}",
              *(_fits_on_cards(r, gib_size) for gib_size in GPU_SIZES_GIB)] for r in results if r.config.gpus > 1]
    note = ("Needs = NVML per-process GPU memory (buffers + CUDA context) of tonight's run; a size fits when the need "
            "is at most that many GiB. A config on N GPUs fits on N x a size when each card's need is at most it (its "
            "need per card: NVML on each card, else that card's buffers).")
    return Table("Fits on a GPU of", [field_heading("model"), field_heading("quant"),
                                      *(f"{gib_size} GiB" for gib_size in GPU_SIZES_GIB)], rows, note)


def _fits_on_cards(result: BenchResult, gib_size: int) -> str:
    """Whether a config on several GPUs fits that many cards of the size (fits_on_cards), or its status."""
    if not result.ok:
        return result.status
    return fits_on_cards(result.memory.needed_card_mib, result.config.gpus, gib_size, result.memory.has_gpu)[0]


def fits_on_cards(need_card_mib: float | None, gpus: int, gib_size: int, has_gpu: bool) -> tuple[str, bool | None]:
    """Whether a config fits as many cards of `gib_size` GiB as it runs on, judged by its fullest card's need
    (Memory.needed_card_mib), in words ("fits"; on several cards "fits on 2 x 24 GiB", "does not fit on 2 x 16 GiB")
    and as a bool; without a need, why (no GPU, or a row split's share of each card unknown) and None. The report's
    fits table and the published site's fits page say it alike."""
    if need_card_mib is None:
        return ("per card not known (row split, no NVML)" if has_gpu else NO_GPU), None
    fits = need_card_mib <= gib_size * 1024
    words = "fits" if fits else "does not fit"
    return (f"{words} on {gpus} x {gib_size} GiB" if gpus > 1 else words), fits


def gpu_tables(results: Sequence[BenchResult]) -> list[Table]:
    """Each ok config on several GPUs: llama.cpp's buffers on each GPU by component, their sum per GPU, and the sum
    over the GPUs (what the seed's VRAM is for one card), beside NVML's figure for each card."""
    columns = [BY_NAME[column] for column in VRAM_COMPONENTS]
    header = ["GPU", *(heading(c.words, c.unit) for c in columns), heading("GPU buffers", MIB_UNIT),
              heading(NVML.words, NVML.unit)]
    tables = []
    for r in results:
        if r.config.gpus == 1 or not r.ok:
            continue
        devices = gpu_buffers_by_device(r.memory.buffers_mib)
        nvml = r.memory.nvml_process_by_device_mib
        rows = [[device, *(c.number(kinds.get(COMPONENT_KINDS[c.name])) for c in columns),
                 NVML.number(round(sum(kinds.values()), 2)), NVML.number(nvml.get(device))]
                for device, kinds in devices.items()]
        rows.append(["**sum**", *(c.number(getattr(r.memory, c.name)) for c in columns),
                     NVML.number(r.memory.gpu_buffers_mib), NVML.number(r.memory.nvml_process_mib)])
        split = f", tensor_split {r.config.tensor_split}" if r.config.tensor_split else ", even shares"
        tables.append(Table(f"{r.config.config_name}: VRAM per GPU ({r.config.gpus} GPUs, split by "
                            f"{r.config.split_mode}{split})", header, rows,
                            "llama.cpp's buffers per GPU; a row split's CUDA<i>_Split buffer holds matrix rows spread "
                            "over every GPU, so it is listed on its own, not charged to one card."))
    return tables


# --------------------------------------------------------------------------------------------- change, sweep


def _pct(before: float | None, after: float | None) -> str:
    if before is None or after is None or not before:
        return MISSING
    return f"{100.0 * (after - before) / before:+.1f}%"


def _component_changes(old: pd.Series, new: pd.Series) -> str:
    """Every GPU buffer that changed, exactly (llama.cpp's buffers are deterministic: any change is real)."""
    changes = []
    for buffer in (BY_NAME[column] for column in VRAM_COMPONENTS):
        before, after = number(old[buffer.name]), number(new[buffer.name])
        if before is not None and after is not None and round(after - before, 2) != 0:
            changes.append(f"{buffer.words} {buffer.number(after - before, sign=True)} {buffer.unit} "
                           f"({_pct(before, after)})")
    return ", ".join(changes) or "unchanged"


def changes_table(history: pd.DataFrame, run_id: str) -> Table | None:
    """Each config tonight against the previous run that measured it: status, every GPU buffer that changed (on the
    same GPU model), NVML's process figure as a cross-check, and tok/s. None on the first night."""
    tonight, before = split_tonight(history, run_id)
    before = before[before["config_id"].isin(set(tonight["config_id"]))]
    if before.empty:
        return None
    previous = before[before["run_id"] == before["run_id"].iloc[-1]].set_index("config_id")
    rows = []
    for _, now in tonight.iterrows():
        cid, name = now["config_id"], now["config_name"]
        if cid not in previous.index:
            rows.append([name, f"new ({now['status']})", MISSING, MISSING, *(MISSING for _ in CHANGE_RATES)])
            continue
        old = previous.loc[cid]
        status = now["status"] if old["status"] == now["status"] else f"{old['status']} -> {now['status']}"
        measured = [number(r["gpu_total_mib"]) is not None for r in (old, now) if r["status"] == "ok"]
        both_ok = old["status"] == now["status"] == "ok"
        buffers = (NO_GPU if measured and not any(measured) else
                   MISSING if not both_ok or not all(measured) else
                   "another GPU model" if old["gpu_name"] != now["gpu_name"] else _component_changes(old, now))
        nvml_old, nvml_new = number(old["nvml_process_mib"]), number(now["nvml_process_mib"])
        nvml = MISSING if nvml_old is None or nvml_new is None else f"{nvml_new - nvml_old:+.0f} {NVML.unit}"
        rows.append([name, status, buffers, nvml,
                     *(_pct(number(old[rate.name]), number(now[rate.name])) for rate in CHANGE_RATES)])
    title = f"Change against the previous run (llama.cpp {str(previous['llama_cpp_commit'].iloc[0])[:8]} -> " \
            f"{str(tonight['llama_cpp_commit'].iloc[0])[:8]}, night {previous['night'].iloc[0]})"
    note = ("GPU buffers: llama.cpp's own accounting, exact to the byte, so every change is listed; which ones page "
            "is the matrix's policy. NVML process: a cross-check (it adds the CUDA context and pools, and varies).")
    header = [field_heading("config_name"), field_heading("status"), "GPU Buffers", heading(NVML.words),
              *(heading(rate.words, rate.unit) for rate in CHANGE_RATES)]
    return Table(title, header, rows, note)


def sweep_points(results: Sequence[BenchResult]) -> dict[tuple[str, str], list[tuple[int, BenchResult]]]:
    """Per model x quant with partial configs: (n_cpu_moe, result) from all-on-GPU (0) to all experts on the CPU
    (n_layer), sorted. Baseline and offload are the sweep's two ends."""
    sweeps: dict[tuple[str, str], list[tuple[int, BenchResult]]] = {}
    for r in results:
        if r.config.mode == "partial":
            sweeps.setdefault((r.config.model.model, r.config.model.quant), [])
    for r in results:
        key = (r.config.model.model, r.config.model.quant)
        if key in sweeps:
            n = {"baseline": 0, "offload": r.config.model.n_layer}.get(r.config.mode, r.config.n_cpu_moe)
            sweeps[key].append((n, r))
    return {key: sorted(points, key=lambda p: p[0]) for key, points in sweeps.items()}


def sweep_tables(results: Sequence[BenchResult]) -> list[Table]:
    tables = []
    for (model, quant), points in sweep_points(results).items():
        rows = [[str(n), r.config.mode, r.status if not r.ok else gib(r.memory.vram_gib, r.memory.has_gpu),
                 _speed_cell(_mode_numbers(r), "tg_ts"), _speed_cell(_mode_numbers(r), "pp_ts"),
                 str(r.n_overridden_tensors)] for n, r in points]
        header = [BY_NAME["n_cpu_moe"].words, field_heading("mode"), heading(VRAM.words),
                  *(heading(speed.words, speed.unit) for speed in (TG, PP)), field_heading("n_overridden_tensors")]
        tables.append(Table(f"Partial offload sweep: {model} {quant}", header, rows))
    return tables


def quality_table(results: Sequence[BenchResult], history: pd.DataFrame, run_id: str) -> Table | None:
    """Tonight's real-weight quality figures; the greedy hash against the last earlier run that recorded one for the
    same config (history is one environment's, oldest first). None when no result carries quality."""
    measured = [r for r in results if r.quality]
    if not measured:
        return None
    previous: dict[str, str] = {}
    if "greedy_sha256" in history.columns and run_id in set(history["run_id"]):
        _, before = split_tonight(history, run_id)
        for cid, sha in zip(before["config_id"], before["greedy_sha256"]):
            if isinstance(sha, str):
                previous[cid] = sha  # oldest first: the last one kept is the most recent
    rows = []
    for r in measured:
        sha, earlier = r.quality.greedy_sha256, previous.get(r.config.config_id)
        changed = MISSING if earlier is None else "no" if earlier == sha else f"**yes** (was {earlier[:12]})"
        rows.append([r.config.model.model, r.config.model.quant, r.config.mode,
                     BY_NAME["perplexity"].number(r.quality.perplexity), sha[:12], changed])
    note = (f"Perplexity over vramwatch's fixed English text ({measured[0].quality.n_tokens} tokens); greedy hash = "
            f"sha256 of a {measured[0].quality.greedy_tokens}-token greedy continuation of a fixed prompt.")
    header = [*(field_heading(name) for name in ("model", "quant", "mode", "perplexity", "greedy_sha256")),
              "Hash Changed"]
    return Table("Quality (real weights)", header, rows, note)


def quarantine_table(quarantined: Sequence[QuarantinedResult]) -> Table | None:
    """Tonight's rows that validation kept out of history, and why: none of their numbers are in the tables above."""
    if not quarantined:
        return None
    rows = [[q.result.config.config_name, q.result.status, ", ".join(q.failed_expectations)] for q in quarantined]
    return Table("Quarantined", ["Config", "Status", "Failed expectations"], rows,
                 note="Kept out of history and of the tables above; their records are in the warehouse's "
                      "quarantine table.")


def validation_table(outcomes: Sequence[ExpectationOutcome], data_docs_href: str | None) -> Table | None:
    """Every expectation of the night's validation suite and how it came out, so the report alone says what was
    checked; the full Great Expectations Data Docs are linked when the night has them."""
    if not outcomes:
        return None
    rows = [[o.name, o.expectation, ", ".join(o.columns), "passed" if o.success else "**FAILED**",
             MISSING if o.unexpected_count is None else str(o.unexpected_count), "; ".join(o.unexpected_examples)]
            for o in outcomes]
    failed = sum(not o.success for o in outcomes)
    return Table("Validation (Great Expectations)",
                 ["Check", "Expectation", "Columns", "Result", "Unexpected rows", "Examples"], rows,
                 note=f"{len(outcomes) - failed} of {len(outcomes)} expectations passed; a row that failed any is "
                      "quarantined (above).",
                 link=("Great Expectations Data Docs for this night (no scripts run; they read plain offline)",
                       data_docs_href) if data_docs_href else None)


def incidents_table(incidents: Sequence[Incident]) -> Table:
    rows = [[str(i.incident_id or MISSING),
             "NEW" if i.is_new else "GREW" if i.escalated else "ENDED" if i.resolution() else "", i.state, i.kind,
             i.opened_night, i.summary] for i in incidents]
    return Table("Incidents", ["#", "", "State", "Kind", "Since", "Summary"], rows)


def bisections_table(incidents: Sequence[Incident]) -> Table | None:
    """The culprit search of each incident that had one: the release or commit that made the change, the figures
    before and after, and what the search cost; or where it stopped and why."""
    searched = [i for i in incidents if i.bisection is not None]
    if not searched:
        return None
    rows = []
    for incident in searched:
        result = incident.bisection
        assert result is not None
        before = MISSING if result.figure_good is None else f"{result.figure_good:g} {result.unit}"
        after = MISSING if result.figure_bad is None else f"{result.figure_bad:g} {result.unit}"
        culprit = (f"{result.level} {result.culprit.ref}: {result.culprit.subject}" if result.culprit
                   else f"stopped between {result.last_good or result.good} and {result.first_bad or result.bad}: "
                        f"{result.stopped}")
        culprit += f" (llama.cpp {result.commit_range} to bisect next)" if result.commit_range else ""
        link = result.culprit.link if result.culprit else MISSING
        rows.append([str(incident.incident_id or MISSING), config_name(result.config_id), words_of(result.metric),
                     f"{before} -> {after}", culprit, link, result.cost])
    return Table("Culprit search (bisection)", ["#", "Config", "Metric", "Good -> bad", "Culprit", "Link", "Steps"],
                 rows, note="Each step built one release or commit and benched the config on the good build's model "
                            "file; vramwatch bisect prints every step.")


def ab_table(comparisons: Sequence[ABComparison]) -> Table | None:
    """Tonight's same-night A/Bs: the previous build's engine (A) against tonight's (B) on one machine."""
    if not comparisons:
        return None
    rows = []
    for c in comparisons:
        for v in c.verdicts:
            figure = AB_JUDGED[v.metric].text
            ratio = MISSING if v.ratio is None else f"{v.ratio:.3f}"
            interval = (MISSING if v.ci_low is None else
                        f"[{v.ci_low:.3f}, {v.ci_high:.3f}] ({100 * v.confidence:.2f}%)")
            could = f"{'+' if v.higher_is_worse else '-'}{v.min_detectable:.1%}" if v.min_detectable is not None \
                else MISSING
            rows.append([config_name(c.run.config_id), words_of(v.metric), f"{c.run.llama_cpp_commit_a[:8]} -> "
                         f"{c.run.llama_cpp_commit_b[:8]}", f"{v.n_a} v {v.n_b}", figure(v.median_a),
                         figure(v.median_b), ratio, interval, MISSING if v.p_value is None else f"{v.p_value:.3f}",
                         could, v.worded if v.verdict != "inconclusive" else f"unconfirmed ({v.reason})"])
    note = ("Both engines ran tonight, interleaved A B A B, one child process per sample, on tonight's model file, "
            "more processes while the answer was open (regress.ab). Ratio = geometric mean(B) / geometric mean(A) "
            "(tok/s, or J/token for energy), with its interval at the level the night's error control granted it; "
            "p = one-sided, of a change for the worse beyond the policy. Slower (energy: higher) pages when the whole "
            "interval lies beyond the policy; 'could detect' is the smallest change the A/B would have called so.")
    return Table("Same-night A/B (previous build -> tonight's)",
                 ["Config", "Metric", "llama.cpp", "Processes", "A", "B", "Ratio", "Interval", "p",
                  "Could detect", "Verdict"],
                 rows, note)


def not_judged_table(not_judged: Sequence[str]) -> Table | None:
    if not not_judged:
        return None
    return Table("Not judged", ["Check", "Why"], [line.split(": ", 1) if ": " in line else [line, ""]
                                                for line in not_judged],
                 note="Checks the night could not make: none of them counts as 'no regression'.")


def not_separable_lines(incidents: Sequence[Incident]) -> list[str]:
    """The report's very first lines for a change beyond the VRAM policy that came with a GPU swap on a build-change
    night: the build or the GPU made it, and tonight cannot tell which; it pages once the new GPU keeps it."""
    held = [i for i in incidents if not i.separable and not i.is_closed]
    if not held:
        return []
    return ["**Build or GPU: not separable tonight** (pages when the next night on the new GPU keeps it)",
            *[line for i in held for line in i.headlines()]]


def resolution_lines(incidents: Sequence[Incident]) -> list[str]:
    """One line per incident that ended tonight, with the build it ended under (blip or fix): said once, that night
    (a closed incident is no longer among a later night's)."""
    return [i.resolution() for i in incidents if not i.is_new and i.resolution()]


NIGHT_STATES = ("Paged", "Watching", "All clear")


def top_lines(verdicts: NightVerdicts) -> list[str]:
    """The report's first lines: one plain state, then its lines.

    Paged       each config that regressed tonight, its exact change and its cause (regress.detect.attribute);
    Watching    nothing paged, but something is suspected and being confirmed (a drift seen once, an A/B left
                open leaning slower), each beyond the chance of every test the night made (regress.detect.judge_night),
                or an incident is still open;
    All clear   nothing paged or suspected, with what was measured (and what the A/Bs could have seen).
    A last line counts the checks that should have run and could not ("Not judged"), whatever the state."""
    paging = [i for i in verdicts.incidents if i.pages]
    still_open = [i for i in verdicts.incidents if not i.pages and not i.is_closed]
    if paging:
        lines = [line for i in paging for line in i.headlines()]
        top = [f"**Paged: {len(lines)} regression(s) tonight**", *lines]
        top += [f"also watching: {line}" for line in verdicts.watching]
    elif verdicts.watching or still_open:
        top = [f"**Watching {len(verdicts.watching) + len(still_open)}: suspected, being confirmed**",
               *verdicts.watching, *(f"still open since {i.opened_night}: {i.summary}" for i in still_open)]
    else:
        top = [f"**All clear**: {verdicts.measured or 'nothing paged, nothing suspected'}."]
    if verdicts.not_judged:
        top.append(f"Not judged: {len(verdicts.not_judged)} check(s) that should have run and could not "
                   "(see 'Not judged')")
    return top


# --------------------------------------------------------------------------------------------- prose


def device_of(results: Sequence[BenchResult]) -> str:
    prints = [r.fingerprint for r in results if r.fingerprint.cpu_model or r.fingerprint.gpu_name]
    if not prints:
        return "unknown"
    fp = prints[0]
    if fp.gpu_name:
        cuda = f", CUDA {fp.cuda_version}" if fp.cuda_version else ""
        return f"{fp.gpu_count}x {fp.gpu_name} (driver {fp.gpu_driver}{cuda}), {fp.cpu_model}"
    return f"no GPU: {fp.cpu_model}, {fp.cpu_cores} cores, {fp.ram_gib:.0f} GiB RAM"


def key_findings(rows: Sequence[SeedRow], results: Sequence[BenchResult], incidents: Sequence[Incident]) -> list[str]:
    """Bullets written from tonight's numbers, per model, like the seed's Key Findings."""
    bullets = []
    if rows and not any(r.has_gpu for r in rows):
        bullets.append("No GPU on this machine: VRAM was not measured (cells say 'no GPU'); throughput is CPU only.")
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        reductions = [r.reduction_pct for r in mine if r.reduction_pct is not None]
        if reductions:
            bullets.append(f"**{model}**: offload cuts VRAM by {min(reductions):.1f}% - {max(reductions):.1f}%"
                           f" across {len(reductions)} quantization(s).")
        kept = [r.offload.vram_gib for r in mine if r.offload and r.offload.vram_gib is not None]
        if kept:
            bullets.append(f"**{model}**: offload keeps {VRAM.number(min(kept))} - {VRAM.text(max(kept))} on the GPU.")
        ratios = [r.baseline.tg_ts / r.offload.tg_ts for r in mine
                  if r.baseline and r.offload and r.baseline.tg_ts and r.offload.tg_ts]
        if ratios:
            ratios.sort()
            bullets.append(f"**{model}**: token generation with offload runs at "
                           f"{100.0 / ratios[len(ratios) // 2]:.0f}% of baseline speed (median over quants).")
    failed = [r for r in results if not r.ok]
    if failed:
        listed = ", ".join(f"{r.config.config_name} ({r.status})" for r in failed)
        bullets.append(f"{len(failed)} config(s) produced no numbers: {listed}.")
    else:
        bullets.append(f"All {len(results)} configs ran.")
    paging = [i for i in incidents if i.pages]
    open_ = [i for i in incidents if not i.is_closed]
    bullets.append(f"{len(paging)} incident(s) paged tonight, {len(open_)} open." if open_ or paging else
                   "No incident open.")
    return bullets
