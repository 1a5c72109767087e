"""Regression detection over synthetic nights: planted steps are caught the night they land, noise raises nothing,
incidents open once, carry on without a second alert, and resolve when the number is back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from support.samples import night, replace, result
from support.warehouses import commit_of, night_of, start_night, store_nights

from vramwatch.records import BenchResult, Incident, TestResult
from vramwatch.regress.detect import detect, detect_for_run, regressions
from vramwatch.regress.vram import Tolerances, VramTolerance
from vramwatch.rows import flatten
from vramwatch.validate.gate import validate_night
from vramwatch.warehouse.store import Warehouse

CONFIGS = night()  # deepseek and phi, Q2_K and Q4_K_M, baseline and offload: 8 configs on an H100


def scaled(test: TestResult, factor: float) -> TestResult:
    samples = [round(s * factor, 3) for s in test.samples_ts]
    return dataclasses.replace(test, samples_ts=samples, avg_ts=round(test.avg_ts * factor, 3))


def jittered(r: BenchResult, rng: np.random.Generator, sigma: float, tg: float = 1.0, pp: float = 1.0) -> BenchResult:
    """Realistic night-to-night jitter: VRAM exact, tok/s gaussian with relative sigma."""
    if not r.ok:
        return r
    return dataclasses.replace(r, tg=scaled(r.tg, tg * (1 + rng.normal(0, sigma))),
                               pp=scaled(r.pp, pp * (1 + rng.normal(0, sigma))))


def frame(nights: list[list[BenchResult]]) -> pd.DataFrame:
    """The history as Warehouse.history() returns it: flattened results plus run and build columns."""
    rows = [{**flatten(r), "night": night_of(i), "run_id": f"run{i:03d}", "llama_cpp_commit": commit_of(i)}
            for i, results in enumerate(nights) for r in results]
    return pd.DataFrame(rows)


def noisy_nights(n: int, sigma: float, seed: int) -> list[list[BenchResult]]:
    rng = np.random.default_rng(seed)
    return [[jittered(r, rng, sigma) for r in CONFIGS] for _ in range(n)]


def by_id(results: list[BenchResult]) -> dict[str, BenchResult]:
    return {r.config.config_id: r for r in results}


A, B, C = "deepseek-moe-16b/Q4_K_M/baseline", "phi-3.5-moe/Q2_K/offload", "phi-3.5-moe/Q4_K_M/baseline"


def planted(results: list[BenchResult], rng: np.random.Generator, sigma: float) -> list[BenchResult]:
    """+2 % on A's model buffer, +64 MiB on B's compute buffer, -10 % tg on C."""
    out = []
    for r in results:
        cid = r.config.config_id
        if cid == A:
            r = replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib * 1.02)
        elif cid == B:
            r = replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + 64)
        out.append(jittered(r, rng, sigma, tg=0.9 if cid == C else 1.0))
    return out


def rerun_from(rng: np.random.Generator, sigma: float, tg: dict[str, float] = {}):
    """A same-night rerun: the config measured again with fresh jitter (and whatever step it really has)."""

    def rerun(config_id: str) -> BenchResult:
        return jittered(by_id(CONFIGS)[config_id], rng, sigma, tg=tg.get(config_id, 1.0))

    return rerun


def simulate(nights: list[list[BenchResult]], reruns, first: int = 0) -> dict[int, list[Incident]]:
    """The nightly loop without a database: tonight's incidents feed tomorrow's open incidents."""
    history = frame(nights)
    open_incidents: list[Incident] = []
    out = {}
    next_id = 1
    for i in range(first, len(nights)):
        tonight = regressions(history[history["night"] <= night_of(i)], f"run{i:03d}", open_incidents, reruns(i))
        stored = []
        for incident in tonight:
            if incident.incident_id is None:
                incident, next_id = dataclasses.replace(incident, incident_id=next_id), next_id + 1
            stored.append(incident)
        out[i] = stored
        open_incidents = [x for x in stored if x.state != "resolved"]
    return out


SIGMA = 0.015  # tok/s jitter: gaussian, 1.5 % sigma, i.e. +-3 % covers 95 % of nights


@pytest.mark.parametrize("seed", range(5))
def test_planted_steps_are_caught_the_night_they_land(seed):
    rng = np.random.default_rng(1000 + seed)
    nights = noisy_nights(40, SIGMA, seed)
    nights.append(planted(CONFIGS, rng, SIGMA))

    incidents = regressions(frame(nights), "run040", rerun_fn=rerun_from(rng, SIGMA, {C: 0.9}))

    got = {(i.kind, i.metric, tuple(i.configs)) for i in incidents if i.pages}
    assert got == {("vram", "gpu_model_mib", (A,)), ("vram", "gpu_compute_mib", (B,)),
                   ("throughput", "tg_avg_ts", (C,))}
    by_metric = {i.metric: i for i in incidents}
    assert by_metric["gpu_model_mib"].delta_pct == pytest.approx(2.0)
    assert by_metric["gpu_model_mib"].delta_mib == pytest.approx(200.2)
    assert by_metric["gpu_compute_mib"].delta_mib == pytest.approx(64.0)
    assert -14 < by_metric["tg_avg_ts"].delta_pct < -6
    assert all(i.build_before == commit_of(39) and i.build_after == commit_of(40) for i in incidents)
    assert "+200 MiB / +2.0%" in by_metric["gpu_model_mib"].summary


def test_a_creep_below_the_tolerance_each_night_pages_once_when_it_adds_up():
    def crept(mib: float) -> list[BenchResult]:
        return [replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + mib) if r.config.config_id == B else r
                for r in CONFIGS]

    nights = [crept(8.0 * i) for i in range(9)] + [CONFIGS]  # +8 MiB a build (tolerance 32), then a fix

    incidents = simulate(nights, lambda i: None)

    assert [len(incidents[i]) for i in range(10)] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # 40 MiB > 32 on night 5
    opened = incidents[5][0]
    assert (opened.kind, opened.metric, opened.configs, opened.pages) == ("vram", "gpu_compute_mib", [B], True)
    assert opened.delta_mib == 40.0 and opened.build_before == commit_of(0) and opened.build_after == commit_of(5)
    assert f"crept up since {night_of(0)}" in opened.summary
    assert all(i.incident_id == opened.incident_id and not i.pages for n in range(6, 9) for i in incidents[n])
    assert incidents[9][0].state == "resolved"


def test_an_accepted_level_is_the_reference_from_the_night_it_opened():
    def grown(mib: float) -> list[BenchResult]:
        return [replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib + mib) if r.config.config_id == A else r
                for r in CONFIGS]

    nights = [CONFIGS, CONFIGS, grown(128), grown(128), grown(128), grown(256)]  # tolerance: 1 % of 10 GiB
    (opened,) = regressions(frame(nights[:3]), "run002")
    accepted = dataclasses.replace(opened, incident_id=1, state="accepted")

    assert regressions(frame(nights[:5]), "run004", accepted=[accepted]) == []
    assert [i.kind for i in regressions(frame(nights[:5]), "run004")] == ["vram"]  # closed but not accepted: pages
    (further,) = regressions(frame(nights), "run005", accepted=[accepted])  # a new step on top of the accepted one
    assert (further.kind, further.delta_mib, further.build_before) == ("vram", 128.0, commit_of(4))


@pytest.mark.parametrize("sigma", [0.015, 0.03])
def test_ninety_nights_of_noise_raise_nothing(sigma):
    nights = noisy_nights(90, sigma, seed=7)
    rng = np.random.default_rng(8)

    incidents = simulate(nights, lambda i: rerun_from(rng, sigma))

    assert [i for night_incidents in incidents.values() for i in night_incidents] == []


def test_a_throughput_drop_without_a_rerun_waits_one_night_for_persistence():
    rng = np.random.default_rng(3)
    nights = noisy_nights(30, SIGMA, seed=3) + [
        [jittered(r, rng, SIGMA, tg=0.85 if r.config.config_id == C else 1.0) for r in CONFIGS] for _ in range(2)]

    incidents = simulate(nights, lambda i: None, first=30)

    assert incidents[30] == []  # one bad night is only a suspect
    (incident,) = incidents[31]
    assert (incident.kind, incident.configs, incident.is_new) == ("throughput", [C], True)


def test_a_rerun_that_comes_back_normal_clears_the_suspect():
    rng = np.random.default_rng(4)
    nights = noisy_nights(30, SIGMA, seed=4)
    nights.append([jittered(r, rng, SIGMA, tg=0.85 if r.config.config_id == C else 1.0) for r in CONFIGS])
    reruns: list[str] = []

    def rerun(config_id: str) -> BenchResult:
        reruns.append(config_id)
        return jittered(by_id(CONFIGS)[config_id], rng, SIGMA)  # a noisy night, not a real step

    assert regressions(frame(nights), "run030", rerun_fn=rerun) == []
    assert reruns == [C]  # only the suspect was rerun


def test_status_changes_are_caught_and_improvements_are_notes():
    last = night_of(0)
    tonight = []
    for r in CONFIGS:
        cid = r.config.config_id
        if cid == "phi-3.5-moe/Q4_K_M/baseline":
            r = result("phi-3.5-moe", "Q4_K_M", "baseline", status="oom")
        elif cid == "deepseek-moe-16b/Q2_K/offload":
            r = replace(r, n_overridden_tensors=0, memory__gpu_model_mib=6_180.0)  # experts back on the GPU
        elif cid == "deepseek-moe-16b/Q4_K_M/offload":
            r = replace(r, memory__gpu_kv_mib=512.0)  # KV halved: good news
        elif cid == "phi-3.5-moe/Q2_K/baseline":
            continue  # vanished
        tonight.append(r)

    incidents = regressions(frame([CONFIGS, tonight]), "run001")

    kinds = {i.kind: i for i in incidents}
    assert set(kinds) == {"stopped_fitting", "offload_stopped", "vram", "vram_improved", "vanished"}
    assert kinds["stopped_fitting"].configs == ["phi-3.5-moe/Q4_K_M/baseline"]
    assert kinds["offload_stopped"].configs == ["deepseek-moe-16b/Q2_K/offload"]
    assert kinds["vanished"].configs == ["phi-3.5-moe/Q2_K/baseline"] and last in kinds["vanished"].summary
    assert kinds["vram"].metric == "gpu_model_mib" and kinds["vram"].configs == ["deepseek-moe-16b/Q2_K/offload"]
    note = kinds["vram_improved"]
    assert (note.metric, note.delta_mib, note.state, note.pages) == ("gpu_kv_mib", -512.0, "resolved", False)
    assert all(i.pages for i in incidents if i.kind != "vram_improved")


def test_configs_sharing_a_cause_make_one_incident():
    tonight = []
    for r in CONFIGS:
        if r.config.model.quant == "Q4_K_M" and r.config.mode == "baseline":
            r = replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib * 1.025)
        if r.config.mode == "offload":
            r = replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + 64)
        tonight.append(r)

    incidents = regressions(frame([CONFIGS, tonight]), "run001")

    by_metric = {i.metric: i for i in incidents}
    assert len(incidents) == 2
    assert by_metric["gpu_model_mib"].configs == ["deepseek-moe-16b/Q4_K_M/baseline", "phi-3.5-moe/Q4_K_M/baseline"]
    assert "Q4_K_M across 2 model(s)" in by_metric["gpu_model_mib"].summary
    assert len(by_metric["gpu_compute_mib"].configs) == 4 and "offload only" in by_metric["gpu_compute_mib"].summary


def test_different_sizes_of_the_same_metric_stay_apart():
    tonight = [replace(r, memory__gpu_kv_mib=r.memory.gpu_kv_mib + (100 if r.config.mode == "baseline" else 900))
               if r.config.model.model == "deepseek-moe-16b" and r.config.model.quant == "Q2_K" else r
               for r in CONFIGS]

    incidents = regressions(frame([CONFIGS, tonight]), "run001")

    assert sorted(i.delta_mib for i in incidents) == [100.0, 900.0]


def test_tolerances_are_per_config_and_vram_is_compared_only_with_a_gpu():
    tonight = [replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + 40) for r in CONFIGS]
    history = frame([CONFIGS, tonight])

    assert len(detect(history, "run001").findings) == 8  # 40 MiB > max(32 MiB, 1 % of 204.5 MiB)
    loose = Tolerances(per_config={"phi-3.5-moe/*": VramTolerance(abs_mib=64)})
    assert {f.model for f in detect(history, "run001", tolerances=loose).findings} == {"deepseek-moe-16b"}

    cpu = night(gpu=False)
    assert detect(frame([cpu, [replace(r, memory__gpu_model_mib=99.0) for r in cpu]]), "run001").findings == []


def test_detection_needs_a_run_of_one_environment():
    history = frame([CONFIGS, night(gpu=False)])
    history.loc[history["run_id"] == "run001", "run_id"] = "run000"
    with pytest.raises(Exception, match="2 environments"):
        detect(history, "run000")
    with pytest.raises(Exception, match="no rows"):
        detect(history, "nope")


# --------------------------------------------------------------------------------------------- with the warehouse


@pytest.fixture
def warehouse(tmp_path):
    w = Warehouse(f"sqlite:///{tmp_path}/warehouse.db")
    yield w
    w.close()


def test_an_incident_opens_once_carries_on_without_an_alert_and_resolves_when_fixed(warehouse):
    regressed = [replace(r, memory__gpu_model_mib=r.memory.gpu_model_mib + 128) if r.config.config_id == A else r
                 for r in CONFIGS]
    store_nights(warehouse, [CONFIGS, CONFIGS, regressed])

    (opened,) = detect_for_run(warehouse, "run002")
    assert (opened.is_new, opened.pages, opened.state, opened.configs) == (True, True, "open", [A])
    assert opened.build_before == commit_of(1) and opened.build_after == commit_of(2)
    assert detect_for_run(warehouse, "run002") == [opened]  # a retried task stores nothing twice

    store_nights(warehouse, [regressed], first=3)
    (carried,) = detect_for_run(warehouse, "run003")
    assert (carried.incident_id, carried.is_new, carried.pages, carried.state) == (opened.incident_id, False, False,
                                                                                   "open")

    crashed = [result("deepseek-moe-16b", "Q4_K_M", "baseline", status="crashed") if r.config.config_id == A else r
               for r in regressed]
    store_nights(warehouse, [crashed], first=4)  # no measurement tonight: the incident waits (and A now fails)
    tonight = {i.kind: i for i in detect_for_run(warehouse, "run004")}
    assert tonight["vram"].state == "open" and tonight["failing"].is_new

    store_nights(warehouse, [CONFIGS], first=5)
    tonight = {i.kind: i for i in detect_for_run(warehouse, "run005")}
    assert tonight["vram"].state == "resolved" and tonight["failing"].state == "resolved"
    assert warehouse.open_incidents() == []


def test_a_quarantined_row_is_reported_as_quarantined_not_vanished(warehouse):
    zero_tg = TestResult(0, 128, [0.0] * 5, 0.0, 0.0)  # a build that "generates" at 0 t/s
    store_nights(warehouse, [CONFIGS])
    tonight = [replace(r, tg=zero_tg) if r.config.config_id == A else r for r in CONFIGS]
    warehouse.store_night(start_night(warehouse, 1), validate_night(tonight))

    (incident,) = detect_for_run(warehouse, "run001")

    assert (incident.kind, incident.configs, incident.pages) == ("quarantined", [A], True)
    assert "failed validation" in incident.summary and "tg_tok_s_positive" in incident.summary


def test_a_night_quarantined_whole_is_still_checked(warehouse):
    store_nights(warehouse, [CONFIGS])
    unknown_status = [replace(r, status="exploded", error="") for r in CONFIGS]  # every row fails status_known
    warehouse.store_night(start_night(warehouse, 1), validate_night(unknown_status))

    (incident,) = detect_for_run(warehouse, "run001")

    assert incident.kind == "quarantined" and len(incident.configs) == len(CONFIGS)
    assert warehouse.history()["run_id"].tolist() == ["run000"] * len(CONFIGS)  # still none of it in history
