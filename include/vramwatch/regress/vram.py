"""VRAM, fit and status checks: deterministic numbers, compared exactly.

llama.cpp's buffers are a function of the model file, the settings and the build: the same config on the same GPU
model gives the same MiB every night, whatever the driver or the host. So there is no statistics here. Each
component (model, KV, compute, output buffer on the GPU) is compared, per config and GPU model, with its lowest value
in the last `window` good nights, and the matrix's policy (config.VramPolicy) says which growth pages. The lowest
rather than the last value catches a creep: builds that each add less than the policy page once their sum reaches
it. A creep slower than that (+0.4 MiB a night: the window's lowest value rises with it) is caught by the value
before the current rise began, traced back `creep_window` nights; the finding says "crept up since" that night,
with the whole amount. While an incident is open for a config and component, the reference ends before the night it
opened, so it stays open until the number is back (and grows, and pages again, when the number grows further). A
config's first nights on a GPU that came with a new build are compared with its last night on the previous GPU, and
such a change is marked not separable (build or GPU) until a later night on the new GPU keeps it.

NVML's per-process figure is noisy (the CUDA context, cuBLAS' workspace, ggml's pool) and pages nothing here: it is
a cross-check in validation and in the report, and the need that `fits_gib` judges.

Status checks follow a config across machines: ok -> oom is a config that stopped fitting, ok -> quarantined one
whose row failed validation, ok -> anything else one that started failing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from vramwatch.config import COMPONENT_KINDS, VRAM_COMPONENTS, VramPolicy, VramRule
from vramwatch.records import IDENTITY_KNOBS, OFFLOAD_MODES, config_name, gpu_buffers_by_device
from vramwatch.records import IncidentKind as Kind
from vramwatch.regress.findings import Finding
from vramwatch.rows import number

# (config_id, metric) -> night an open incident began: references must come from before it.
Cutoffs = Mapping[tuple[str, str], str]


def before_cutoff(rows: pd.DataFrame, cutoff: str | None) -> pd.DataFrame:
    """The rows a reference may come from: all, or those before the night an open incident began."""
    return rows if cutoff is None else rows[rows["night"] < cutoff]


def _reference(past: pd.DataFrame, cutoff: str | None) -> pd.Series | None:
    rows = before_cutoff(past, cutoff)
    return None if rows.empty else rows.iloc[-1]


def row_finding(kind: str, metric: str, row: pd.Series, ref: pd.Series | None, **values: object) -> Finding:
    """A finding on tonight's row, against the reference row it was judged by (its build is the one before)."""
    return Finding(kind=kind, metric=metric, config_id=row["config_id"], environment_id=row["environment_id"],
                   model=row["model"], quant=row["quant"], mode=row["mode"],
                   build_before="" if ref is None else str(ref["llama_cpp_commit"]),
                   build_after=str(row["llama_cpp_commit"]), **values)  # type: ignore[arg-type]


def _gpu_buffers(row: pd.Series) -> dict[str, dict[str, float]]:
    buffers = row.get("buffers_mib")
    return gpu_buffers_by_device(buffers) if isinstance(buffers, dict) else {}


def gpu_device(row: pd.Series) -> str:
    """The GPU device llama.cpp named in a row's buffers (CUDA0), or "GPU" when there are several or none."""
    gpus = list(_gpu_buffers(row))
    return gpus[0] if len(gpus) == 1 else "GPU"


# a buffer kind (kv) -> the component column that sums it over the GPUs (gpu_kv_mib)
KIND_COMPONENTS = {kind: column for column, kind in COMPONENT_KINDS.items()}


def device_metrics(row: pd.Series) -> list[str]:
    """What a config measured on several GPUs is judged by: each GPU's own components ("CUDA1/compute"), so a
    change names the GPU it happened on; [] on one GPU, which is judged by the component columns as ever."""
    by_device = _gpu_buffers(row)
    if len(by_device) < 2:
        return []
    return [f"{device}/{kind}" for device in by_device for kind in KIND_COMPONENTS]


def _with_device_columns(rows: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The rows with one column per device metric, read from their buffers (None where a row has no such buffer)."""
    rows = rows.copy()
    for metric in metrics:
        rows[metric] = [buffers.get(metric) if isinstance(buffers, dict) else None for buffers in rows["buffers_mib"]]
    return rows


def _component_words(row: pd.Series, metric: str) -> str:
    """"CUDA1 compute" for a device metric; a component column on the row's one GPU, "CUDA0 compute" (or "GPU
    compute" where it has several or none)."""
    device, _, kind = metric.partition("/")
    if kind:
        return f"{device} {VRAM_COMPONENTS[KIND_COMPONENTS[kind]]}"
    return f"{gpu_device(row)} {VRAM_COMPONENTS[metric]}"


def component_change(row: pd.Series, metric: str, before: float, after: float) -> str:
    """One config's exact change, as the report's and the alert's first lines say it."""
    delta = after - before
    pct = f", {100.0 * delta / before:+.1f}%" if before else ""
    return (f"{config_name(row['config_id'])}: {_component_words(row, metric)} {before:.2f} -> "
            f"{after:.2f} MiB ({delta:+.2f} MiB{pct})")


def _status_finding(row: pd.Series, past: pd.DataFrame, cutoffs: Cutoffs) -> Finding | None:
    if _ran_without_its_gpu(row):
        return gpu_lost_finding(row, past, cutoffs)
    kind = {"oom": Kind.STOPPED_FITTING, "quarantined": Kind.QUARANTINED}.get(row["status"], Kind.FAILING)
    ref = _reference(past, cutoffs.get((row["config_id"], "status")))
    if ref is None or ref["status"] != "ok":
        return None
    detail = f"ok -> {row['status']}" + (f": {row['error']}" if row["error"] else "")
    return row_finding(kind, "status", row, ref, detail=detail)


def _ran_without_its_gpu(row: pd.Series) -> bool:
    """A row validation kept out because the build's GPU backend ran on the CPU: a worker that lost its GPU. Its
    cause is the machine, not a measurement that failed a check."""
    return (row["status"] == "quarantined" and "backend_matches_build" in str(row["error"])
            and number(row["gpu_total_mib"]) is None)


def gpu_lost_finding(row: pd.Series, past: pd.DataFrame, cutoffs: Cutoffs) -> Finding | None:
    """A config measured on a GPU before (before the loss, while an incident is open) and without one tonight; past:
    its earlier rows."""
    good = before_cutoff(past[past["status"] == "ok"], cutoffs.get((row["config_id"], "backend")))
    if good.empty or number(good.iloc[-1]["gpu_total_mib"]) is None:
        return None
    ref = good.iloc[-1]
    return row_finding(Kind.GPU_LOST, "backend", row, ref, detail=f"{ref['gpu_name']} -> no GPU ({row['cpu_model']})")


def _offload_finding(row: pd.Series, good: pd.DataFrame, cutoffs: Cutoffs) -> Finding | None:
    """An offload run whose override matched nothing: experts silently back on the GPU."""
    metric = "n_overridden_tensors"
    ref = _reference(good, cutoffs.get((row["config_id"], metric)))
    if row["mode"] not in OFFLOAD_MODES or ref is None or not ref[metric] or row[metric]:
        return None
    return row_finding(Kind.OFFLOAD_STOPPED, metric, row, ref, before=float(ref[metric]), after=0.0,
                    detail=f"{int(ref[metric])} -> 0 tensors in CPU memory")


def _reference_row(good: pd.DataFrame, metric: str, cutoff: str | None, policy: VramPolicy) -> pd.Series | None:
    """The row a component is judged against (before the cutoff): the lowest value among the last `window` good rows
    (the latest such row on a tie, so the reference names the newest build at that level), or, lower still, the value
    before the component's current rise began, traced back over `creep_window` rows. The window's minimum alone moves
    up with a creep longer than the window, which then never pages; the start of the rise does not move."""
    rows = before_cutoff(good, cutoff).tail(max(policy.window, policy.creep_window))
    # positions, not labels: this runs per config, component and night, and numpy is ~5x cheaper than pandas here
    values = pd.to_numeric(rows[metric], errors="coerce").to_numpy(float)
    measured = np.flatnonzero(~np.isnan(values))
    if not len(measured):
        return None
    level = values[measured]
    falls = np.flatnonzero(level[1:] < level[:-1])  # the rise began after the last fall
    start = int(falls[-1]) + 1 if len(falls) else 0
    before_rise = measured[start + int(np.count_nonzero(level[start:] == level[start])) - 1]  # last at that level
    recent = measured[measured >= len(rows) - policy.window][::-1]  # newest first: argmin takes the latest on a tie
    lowest = recent[int(np.argmin(values[recent]))] if len(recent) else before_rise
    return rows.iloc[before_rise if values[before_rise] < values[lowest] else lowest]


def _crept(good: pd.DataFrame, metric: str, ref: pd.Series, after: float, rule: VramRule) -> bool:
    """Whether a component came from its reference row to tonight's value in steps that each stay below what pages
    (a creep), rather than in one that pages by itself."""
    since = good[metric].iloc[good.index.get_loc(ref.name) + 1:].map(number).dropna().tolist()
    levels = [float(ref[metric]), *since, after]
    return not any(rule.pages(old, new - old) for old, new in zip(levels, levels[1:]))


def _previous_gpu_row(gpu_rows: pd.DataFrame, row: pd.Series, cutoff: str | None) -> pd.Series | None:
    """The config's last good night on another GPU (before the cutoff), when it has none on tonight's GPU there and
    the build changed since: a GPU swap on a build-change night, which must not restart the comparison."""
    rows = before_cutoff(gpu_rows, cutoff)
    if rows.empty or (rows["gpu_name"] == row["gpu_name"]).any():
        return None
    last = rows.iloc[-1]
    return last if last["llama_cpp_commit"] != row["llama_cpp_commit"] else None


def _swap_detail(row: pd.Series, ref: pd.Series, same_gpu: pd.DataFrame) -> tuple[str, bool]:
    """What a change against the previous GPU's last night is, and whether it is separable: on the swap night the
    build and the GPU changed together; a later night that keeps it on the new GPU keeps it with the build."""
    swap = f"{ref['gpu_name']} -> {row['gpu_name']}"
    if same_gpu.empty:
        return f"build or GPU: not separable tonight (GPU {swap} with the build)", False
    return (f"kept on the new GPU by llama.cpp {str(row['llama_cpp_commit'])[:8]} since the GPU swap {swap} on "
            f"{same_gpu['night'].iloc[0]}"), True


def _component_findings(row: pd.Series, gpu_rows: pd.DataFrame, cutoffs: Cutoffs,
                        policy: VramPolicy) -> list[Finding]:
    """gpu_rows: the config's good rows measured on a GPU, any GPU; compared on tonight's GPU model, and across a GPU
    swap (_previous_gpu_row) with the previous GPU's last night."""
    metrics = device_metrics(row)
    if metrics:
        row = _with_device_columns(row.to_frame().T, metrics).iloc[0]
        gpu_rows = _with_device_columns(gpu_rows, metrics)
    good = gpu_rows[gpu_rows["gpu_name"] == row["gpu_name"]]
    findings = []
    for metric in metrics or VRAM_COMPONENTS:
        cutoff = cutoffs.get((row["config_id"], metric))
        after = number(row[metric])
        ref = _reference_row(good, metric, cutoff, policy)
        swapped = ref is None  # no night on this GPU to compare with: the previous GPU's, if the build changed
        if swapped:
            ref = _previous_gpu_row(gpu_rows, row, cutoff)
        before = None if ref is None else number(ref[metric])
        if after is None or before is None or after == before:
            continue
        delta, rule = after - before, policy.rule(KIND_COMPONENTS.get(metric.partition("/")[2], metric))
        if not (rule.pages(before, delta) or rule.pages(after, -delta)):
            continue  # reported exactly in the report's change table, but below what pages
        change, detail, separable = component_change(row, metric, before, after), "", True
        if swapped:
            detail, separable = _swap_detail(row, ref, good)
            change += f" against its last night on {ref['gpu_name']} ({ref['night']})"
        elif delta > 0 and _crept(good, metric, ref, after, rule):
            detail = f"crept up since {ref['night']} ({delta:+.2f} MiB in all)"
            change += f", crept up since {ref['night']}"
        findings.append(row_finding(
            Kind.VRAM if delta > 0 else Kind.VRAM_IMPROVED, metric, row, ref, before=before, after=after,
            delta_mib=delta, delta_pct=100.0 * delta / before if before else None, detail=detail, change=change,
            separable=separable))
    return findings


def _fit_findings(row: pd.Series, good: pd.DataFrame, cutoffs: Cutoffs, policy: VramPolicy) -> list[Finding]:
    """Sizes of the policy the config's need fit last time and no longer fits tonight: on a split over N GPUs, the
    need of its fullest card against N cards of the size."""
    need = "needed_card_mib"
    after = number(row[need])
    cards, on = (f"{row['gpus']} x ", " on its fullest card") if row["gpus"] > 1 else ("", "")
    findings = []
    for size in policy.fits_gib:
        metric = f"fits_{size:g}gib"
        ref = _reference(good[good[need].notna()], cutoffs.get((row["config_id"], metric)))
        before = None if ref is None else number(ref[need])
        limit = size * 1024
        if after is not None and before is not None and before <= limit < after:
            findings.append(row_finding(
                Kind.NO_LONGER_FITS, metric, row, ref, before=before, after=after, delta_mib=after - before,
                delta_pct=100.0 * (after - before) / before,
                change=f"{config_name(row['config_id'])}: needs {after / 1024:.2f} GiB{on}, no longer fits "
                       f"{cards}{size:g} GiB (needed {before / 1024:.2f})"))
    return findings


def memory_and_status_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {},
                               policy: VramPolicy = VramPolicy()) -> list[Finding]:
    """Per component VRAM, GPU-size fit, ok -> failure, and offload that stopped moving tensors, for each of
    tonight's configs. `before` holds earlier runs, oldest first, of any machine: VRAM is compared on the same GPU
    model (the driver and the host do not change llama.cpp's buffers) and, on a config's first nights on a GPU that
    came with a new build, with its last night on the previous GPU; status on any machine."""
    past_by_config = dict(tuple(before.groupby("config_id", sort=False)))
    findings: list[Finding] = []
    for _, row in tonight.iterrows():
        past = past_by_config.get(row["config_id"])
        if past is None:
            continue  # a new config: nothing to compare with yet
        if row["status"] != "ok":
            findings += filter(None, [_status_finding(row, past, cutoffs)])
            continue
        good = past[past["status"] == "ok"]
        findings += filter(None, [_offload_finding(row, good, cutoffs)])
        if number(row["gpu_total_mib"]) is not None:  # no GPU tonight: no VRAM to compare
            on_gpu = good[good["gpu_total_mib"].notna()]
            findings += _component_findings(row, on_gpu, cutoffs, policy)
            findings += _fit_findings(row, on_gpu[on_gpu["gpu_name"] == row["gpu_name"]], cutoffs, policy)
    return findings


def _settings_changes(old: pd.Series, new: pd.Series) -> str:
    """The identity knobs (records.IDENTITY_KNOBS) whose flat-row columns differ between two rows of one name."""
    changed = [f"{k} {old[k]} -> {new[k]}" for k in IDENTITY_KNOBS if k in old and k in new and old[k] != new[k]]
    return ", ".join(changed) or "the generation test"


def vanished_findings(tonight: pd.DataFrame, before: pd.DataFrame, cutoffs: Cutoffs = {}) -> list[Finding]:
    """Configs of the previous run (or of an open 'vanished' incident) with no row tonight, on any machine. A config
    whose name comes back with other settings is a new series (a matrix edit), not a vanished one."""
    if before.empty:
        return []
    previous = before[before["run_id"] == before["run_id"].iloc[-1]]
    still_open = {config for config, metric in cutoffs if metric == "config"}
    present = set(tonight["config_id"])
    renamed = dict(zip(tonight["config_name"], tonight.index))
    last_seen = before.drop_duplicates("config_id", keep="last").set_index("config_id")
    after = tonight["llama_cpp_commit"].iloc[0] if not tonight.empty else ""
    findings = []
    for config_id in sorted((set(previous["config_id"]) | still_open) - present):
        if config_id not in last_seen.index:
            continue
        ref = last_seen.loc[config_id]
        row = ref.copy()
        row["config_id"], row["llama_cpp_commit"] = config_id, after
        if ref["config_name"] in renamed:
            new = tonight.loc[renamed[ref["config_name"]]]
            findings.append(row_finding(Kind.SERIES_CHANGED, "config", new, ref,
                                     detail=f"settings changed: {_settings_changes(ref, new)}"))
        else:
            findings.append(row_finding(Kind.VANISHED, "config", row, ref, detail=f"last seen {ref['night']}"))
    return findings
