"""The typed records every stage passes on, one way: build -> models -> bench -> validate -> store -> regress -> report.

Plain stdlib dataclasses on purpose: the bench child imports this module inside the build's own venv, which has
llama-cpp-python and numpy but none of our other dependencies. Every record round-trips through JSON
(`to_dict` / `from_dict`) because that is how it crosses process and Airflow task boundaries.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from vramwatch.errors import UserError

Mode = Literal["baseline", "offload", "partial"]
MODES: tuple[Mode, ...] = typing.get_args(Mode)
OFFLOAD_MODES: tuple[Mode, ...] = ("offload", "partial")  # the modes that keep (some) experts in CPU memory
SEED_MODES: tuple[Mode, ...] = ("baseline", "offload")  # the seed table's two columns

# Outcome of one bench config. `ok` is the only status that carries measurements.
# invalid_measurement: it ran, but llama.cpp's buffer lines did not parse (or not the GPU's), so there is no figure.
Status = Literal["ok", "oom", "timeout", "crashed", "invalid_model", "not_applicable", "invalid_measurement"]
STATUSES: tuple[Status, ...] = typing.get_args(Status)

# How llama.cpp spreads a model over the config's GPUs (llama_split_mode): none keeps it all on the first, layer gives
# each GPU whole layers with their KV, row splits each weight matrix by rows across them.
SplitMode = Literal["none", "layer", "row"]
SPLIT_MODES: tuple[SplitMode, ...] = typing.get_args(SplitMode)
FlashAttn = Literal["auto", "on", "off"]
FLASH_ATTN: tuple[FlashAttn, ...] = typing.get_args(FlashAttn)
# KV cache types llama.cpp accepts for type_k / type_v (ggml type names, as llama-bench's -ctk / -ctv take them), with
# the ggml_type id the bench child sets them by.
KV_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "iq4_nl": 20, "q5_0": 6, "q5_1": 7}
# llama.cpp file types a matrix may ask for (llama_ftype names without LLAMA_FTYPE_MOSTLY_), plus "native": bench
# the source file as it is. A test keeps them equal to the pinned engine's own table.
QUANT_TYPES = (
    "native", "F32", "F16", "BF16", "Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S",
    "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS",
    "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE",
    "NVFP4",
)
MODEL_NAME_MAX = 120  # characters of a model's name the warehouse keeps (rows.FIELDS "model"); the matrix checks it
TENSOR_SPLIT_MAX = 64  # characters of a tensor_split the warehouse keeps (rows.FIELDS "tensor_split"); knob_problems
RESULT_MARKER = "VRAMWATCH_RESULT "  # starts the bench child's one result line on stdout
BENCH_PARENT_ENV = "VRAMWATCH_BENCH_PARENT"  # the bench child's parent's pid: the child dies with it
ERROR_CHARS = 500  # what a record keeps of an error: its first characters, on one line


def error_line(text: str) -> str:
    """An error as a record keeps it: one line (runs of whitespace, newlines too, made one space), ERROR_CHARS long
    at most."""
    return " ".join(text.split())[:ERROR_CHARS]


MIB = 1024 * 1024
GIB = 1024 * MIB

R = TypeVar("R", bound="Record")


class Record:
    """JSON round-trip for nested dataclasses (records, lists and dicts of them, optionals)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        hints = _field_hints(cls)
        return cls(**{k: revive(hints[k], v) for k, v in data.items() if k in hints})

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        return cls.from_dict(json.loads(text))


@functools.cache
def _field_hints(cls: type) -> dict[str, Any]:
    """A record's fields and their types, resolved once per class: resolving the annotations is most of the cost of
    reading a night's records back (a page load, a regression scan)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def revive(hint: Any, value: Any) -> Any:
    """A JSON value as the type `hint` names: records (in lists, dicts, optionals) from their dicts; a record that
    is one already, and anything else, as it is."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return revive(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [revive(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: revive(item, v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record) and isinstance(value, dict):
        return hint.from_dict(value)
    return value


def jsonable(value: Any) -> Any:
    """A value as JSON carries it: records (in lists and dicts too) as their dicts, the rest as it is."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildRequest(Record):
    """What to build. `key` identifies the artifact: same request, same venv, no rebuild."""

    version: str  # llama-cpp-python version ("0.3.36"), or the git ref for git sources
    source: str = "pypi"  # pypi | git | path
    location: str = ""  # index URL, git URL/path or source path; empty = PyPI
    backend: str = "cpu"  # cpu | cuda
    cuda_architectures: str = ""  # e.g. "90"; empty for cpu
    cmake_args: str = ""

    @property
    def key(self) -> str:
        import hashlib

        raw = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        label = self.version.replace("/", "_")[:24]
        return f"{label}-{self.backend}-{hashlib.sha256(raw).hexdigest()[:10]}"


@dataclass(frozen=True)
class BuildRecord(Record):
    """A finished (or failed) build: an isolated venv whose Python runs the bench child."""

    request: BuildRequest
    status: str  # ok | reused | failed
    python: str  # the build venv's interpreter; the only Python that ever loads llama.cpp
    source_dir: str  # unpacked llama-cpp-python source (vocab GGUFs live under vendor/llama.cpp/models)
    llama_cpp_python_version: str
    llama_cpp_commit: str
    duration_s: float = 0.0
    artifact_bytes: int = 0
    log_tail: str = ""
    error: str = ""
    built_at: str = ""
    llama_bench: str = ""  # path of a llama-bench binary built from the same source; empty if not asked for

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "reused")


@dataclass(frozen=True)
class BuildCheck(Record):
    """Result of asking a build source for its newest build, against the last one benchmarked."""

    latest: str
    last_benchmarked: str | None
    is_new: bool
    forced: bool = False
    commit: str = ""  # git sources: the llama.cpp commit `latest` points at

    @property
    def should_run(self) -> bool:
        return self.is_new or self.forced


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelFile(Record):
    """One GGUF on disk, ready to bench: a model at one quantization."""

    model: str  # matrix name, e.g. "deepseek-moe-16b"
    quant: str  # llama.cpp file type name: Q2_K, Q4_K_M, Q8_0, MXFP4_MOE, F16, ...
    path: str
    file_bytes: int
    sha256: str
    arch: str  # general.architecture
    n_params: int
    n_layer: int
    n_expert: int  # 0 for dense models
    n_expert_used: int
    synthetic: bool
    scale: str = ""  # tiny | full for synthetic models
    fallback_tensors: int = 0  # tensors llama_model_quantize stored in another type than asked
    error: str = ""  # why the file could not be made (its source is missing or broken): its configs end invalid_model

    @classmethod
    def unavailable(cls, model: str, quant: str, error: str) -> ModelFile:
        """The record of a file that could not be made: the bench reports its configs invalid_model with `error`."""
        return cls(model=model, quant=quant, path="", file_bytes=0, sha256="", arch="", n_params=0, n_layer=0,
                   n_expert=0, n_expert_used=0, synthetic=False, error=error)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0


# --------------------------------------------------------------------------------------------- bench


@dataclass(frozen=True)
class GenerationTest(Record):
    """The seed's generation test: one fixed prompt, sampled, timed end to end."""

    prompt: str = "Explain quantum computing in simple terms"
    max_tokens: int = 100
    temperature: float = 0.7
    seed: int = 42


def about(help: str, metavar: str = "", choices: tuple[str, ...] = (), cli: bool = True) -> dict[str, Any]:
    """A request field's words, declared with the field: what every face that asks for it (the CLI's flags, a DAG's
    params) says of it. `metavar` names the value in --help; `choices` are the values a free-form str takes; cli
    False: the CLI has no flag for it (it says where a scheduler stores the result)."""
    return {"help": help, "metavar": metavar, "choices": choices, "cli": cli}


@dataclass(frozen=True)
class BenchKnobs(Record):
    """Every setting of a bench that changes its numbers, with its default and its help: the one place they are
    declared.

    The matrix takes these fields (config.Matrix derives its own from here), `vramwatch bench` has one flag per field
    (--n-prompt, ...), BenchConfig carries them, and `knob_problems` is the one check of them, run where a matrix
    loads, by the CLI and by the bench child.
    """

    n_prompt: int = field(default=512, metadata=about("prompt tokens of the pp test", "N"))
    n_gen: int = field(default=128, metadata=about("generated tokens of the tg test", "N"))
    reps: int = field(default=5, metadata=about("timed repetitions of each test after one warm-up", "N"))
    n_ctx: int = field(default=4096, metadata=about("context size in tokens", "N"))
    n_batch: int = field(default=2048, metadata=about("logical batch size (llama.cpp's n_batch)", "N"))
    n_ubatch: int = field(default=512, metadata=about("physical micro-batch size (llama.cpp's n_ubatch)", "N"))
    n_threads: int = field(default=0, metadata=about("CPU threads; 0 = physical cores of the bench machine", "N"))
    n_gpu_layers: int = field(default=999, metadata=about("layers on the GPU (999: all)", "N"))
    flash_attn: FlashAttn = field(default="auto", metadata=about(
        "flash attention; auto: llama.cpp decides, the result records its choice"))
    use_mmap: bool = field(default=True, metadata=about(
        "map the model file instead of loading it into memory (without it, offloaded experts sit in pinned host "
        "memory)"))
    type_k: str = field(default="f16", metadata=about("KV cache type of K", "TYPE", tuple(KV_TYPES)))
    type_v: str = field(default="f16", metadata=about("KV cache type of V", "TYPE", tuple(KV_TYPES)))
    generation: GenerationTest | None = field(default_factory=GenerationTest, metadata=about(
        "the seed's sampled generation test (one fixed prompt, timed end to end)"))
    timeout_s: float = field(default=900.0, metadata=about(
        "seconds before the child is killed and the status is timeout", "S"))
    host_memory_limit_mib: int = field(default=0, metadata=about(
        "host memory a bench child may use, MiB (0: no limit): it runs in a cgroup of its own with this memory.max, "
        "so a config that outgrows it is killed by the kernel alone and ends oom (needs a writable memory cgroup: "
        "root)", "MIB"))
    gpus: int = field(default=1, metadata=about(
        "GPUs the config runs on: the runner pins exactly these (CUDA_VISIBLE_DEVICES), so a config never spreads "
        "over a GPU by accident", "N"))
    split_mode: SplitMode = field(default="layer", metadata=about(
        "how llama.cpp spreads the model over the GPUs (--split-mode): none, layer (whole layers and their KV per "
        "GPU) or row (each weight matrix split by rows)"))
    tensor_split: str = field(default="", metadata=about(
        "each GPU's share of the layers or rows, comma-separated as llama.cpp's --tensor-split takes it (3,1); empty: "
        "even shares (never llama.cpp's default of free memory, which changes with whatever else runs)", "SHARES"))


KNOB_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BenchKnobs))
# The knobs that change a config's figures: with the model, quant and mode they are its identity, so a matrix edit
# starts a new series instead of paging as a llama.cpp regression. reps (precision) and the limits change no figure.
IDENTITY_KNOBS: tuple[str, ...] = tuple(name for name in KNOB_NAMES
                                        if name not in ("reps", "timeout_s", "host_memory_limit_mib"))
# Identity knobs added after configs were first stored: hashed only where they differ from their default, so every
# config measured before they existed (one GPU, whatever its split) keeps its id and its history.
LATER_IDENTITY_KNOBS: tuple[str, ...] = ("gpus", "split_mode", "tensor_split")


def settings_id(settings: dict[str, Any]) -> str:
    """A short, stable hash of a config's identity settings (json with sorted keys)."""
    import hashlib

    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def config_name(config_id: str) -> str:
    """The readable part of a config id (model/quant/mode), what reports and alerts show."""
    return config_id.split("@", 1)[0]


def knob_problems(knobs: Any) -> list[str]:
    """What is wrong with a set of bench knobs (a BenchKnobs, BenchConfig or Matrix), one "field: why" each."""
    problems = [f"{name}: must be at least 1, got {getattr(knobs, name)}"
                for name in ("n_prompt", "n_gen", "reps", "n_batch", "n_ubatch") if getattr(knobs, name) < 1]
    if knobs.n_prompt + 1 > knobs.n_ctx:
        problems.append(f"n_prompt: {knobs.n_prompt} prompt tokens plus one generated do not fit n_ctx {knobs.n_ctx}")
    if knobs.n_gen > knobs.n_ctx:
        problems.append(f"n_gen: {knobs.n_gen} tokens do not fit n_ctx {knobs.n_ctx}")
    if knobs.n_threads < 0:
        problems.append(f"n_threads: must be 0 (physical cores) or more, got {knobs.n_threads}")
    if knobs.flash_attn not in FLASH_ATTN:
        problems.append(f"flash_attn: {knobs.flash_attn!r} is not one of {', '.join(FLASH_ATTN)}")
    problems += [f"{name}: {getattr(knobs, name)!r} is not a KV type llama.cpp knows ({', '.join(KV_TYPES)})"
                 for name in ("type_k", "type_v") if getattr(knobs, name) not in KV_TYPES]
    if not knobs.timeout_s > 0:
        problems.append(f"timeout_s: must be above 0, got {knobs.timeout_s}")
    if knobs.host_memory_limit_mib < 0:
        problems.append(f"host_memory_limit_mib: must be 0 (no limit) or more, got {knobs.host_memory_limit_mib}")
    return problems + _split_problems(knobs)


def _split_problems(knobs: Any) -> list[str]:
    if knobs.gpus < 1:
        return [f"gpus: must be at least 1, got {knobs.gpus}"]
    if knobs.split_mode not in SPLIT_MODES:
        return [f"split_mode: {knobs.split_mode!r} is not one of {', '.join(SPLIT_MODES)}"]
    if knobs.gpus > 1 and knobs.split_mode == "none":
        return [f"split_mode: none keeps the model on one GPU; with gpus={knobs.gpus} use layer or row (or gpus: 1)"]
    if not knobs.tensor_split:
        return []
    if len(knobs.tensor_split) > TENSOR_SPLIT_MAX:  # its row could never be stored
        return [f"tensor_split: {len(knobs.tensor_split)} characters, more than the {TENSOR_SPLIT_MAX} the warehouse "
                f"keeps; write the shares shorter (3,1)"]
    if knobs.gpus == 1:
        return [f"tensor_split: {knobs.tensor_split!r} shares one GPU's model with nothing; leave it empty or set gpus"]
    try:
        shares = [float(part) for part in knobs.tensor_split.split(",")]
    except ValueError:
        return [f"tensor_split: {knobs.tensor_split!r} is not comma-separated numbers (e.g. 3,1)"]
    if len(shares) != knobs.gpus:
        return [f"tensor_split: {len(shares)} share(s) for gpus={knobs.gpus}; give one per GPU"]
    if any(not share >= 0 for share in shares) or not sum(shares) > 0:
        return [f"tensor_split: {knobs.tensor_split!r}: shares must be 0 or more, and not all 0"]
    return []


def split_shares(knobs: Any) -> list[float]:
    """Each of the config's GPUs' share of the model (they sum to 1): tensor_split normalised, else even."""
    shares = [float(part) for part in knobs.tensor_split.split(",")] if knobs.tensor_split else [1.0] * knobs.gpus
    return [share / sum(shares) for share in shares]


GPU_DEVICE_PREFIX = "CUDA"  # what llama.cpp names the devices of the GPU backend vramwatch pins (CUDA0, CUDA1, ...)


def expected_gpu_devices(knobs: Any, prefix: str = GPU_DEVICE_PREFIX) -> list[str]:
    """The pinned GPUs (as llama.cpp names them) that must each hold model, KV and compute buffers: every GPU with a
    share of the layers; with split_mode none, the first alone. (A row split gives out whole layers by the same
    shares, and logs the rows of each GPU's layers' matrices, spread over every GPU, as one CUDA<i>_Split buffer.)"""
    if knobs.split_mode == "none":
        return [f"{prefix}0"]
    return [f"{prefix}{i}" for i, share in enumerate(split_shares(knobs)) if share > 0]


@dataclass(frozen=True, kw_only=True)
class BenchConfig(BenchKnobs):
    """One test instance, as llama-bench has one: a model file in a mode, with every knob that changes the numbers."""

    model: ModelFile
    mode: Mode
    n_cpu_moe: int = 0  # partial mode: experts of layers [0, n_cpu_moe) in CPU memory
    quality: bool = False  # also measure perplexity and a greedy continuation (real weights only)

    @property
    def mode_label(self) -> str:
        """The mode as tables name it: partial mode with its layer count (partial4); on several GPUs with their
        count and split (baseline-2gpu-layer), so a config on two GPUs never shares a name with its one-GPU twin."""
        label = f"partial{self.n_cpu_moe}" if self.mode == "partial" else self.mode
        return f"{label}-{self.gpus}gpu-{self.split_mode}" if self.gpus > 1 else label

    @property
    def config_name(self) -> str:
        """model/quant/mode: what people call the config."""
        return f"{self.model.model}/{self.model.quant}/{self.mode_label}"

    @property
    def settings(self) -> dict[str, Any]:
        """The identity knobs' values, JSON-able (the generation test as a dict, or None)."""
        defaults = BenchKnobs()
        return {name: (dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
                for name in IDENTITY_KNOBS for value in [getattr(self, name)]
                if name not in LATER_IDENTITY_KNOBS or value != getattr(defaults, name)}

    @property
    def config_id(self) -> str:
        """Stable identity of a series across nights, what history and regressions are keyed by: the name plus a
        hash of every setting that changes the figures (deepseek-moe-16b/Q4_K_M/baseline@1f3a9c0e)."""
        return f"{self.config_name}@{settings_id(self.settings)}"

    def problems(self) -> list[str]:
        """knob_problems, plus what the mode needs."""
        found = knob_problems(self)
        if self.mode not in MODES:
            found.append(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "partial" and self.n_cpu_moe < 1:
            found.append(f"n_cpu_moe: partial mode needs at least 1 layer, got {self.n_cpu_moe}")
        return found


@dataclass(frozen=True)
class TestResult(Record):
    """One llama-bench test (pp or tg): repetitions, mean and stddev in tokens per second."""

    __test__ = False  # not a pytest class, despite the name llama-bench gave it

    n_prompt: int
    n_gen: int
    samples_ts: list[float]
    avg_ts: float
    stddev_ts: float


@dataclass(frozen=True)
class GenerationResult(Record):
    tokens: int
    tokens_per_s: float
    text_sha256: str


@dataclass(frozen=True)
class QualityResult(Record):
    """Output quality of real weights: perplexity over a fixed text and the hash of a greedy continuation."""

    perplexity: float
    n_tokens: int  # tokens scored for the perplexity
    greedy_sha256: str  # sha256 of the greedy continuation's text: changes when the build changes the output
    greedy_tokens: int


# The buffer kinds llama.cpp keeps on the GPU of a GPU backend with layers offloaded, in every mode (kind -> how its log
# line names it): at least the non-expert weights, the KV cache and the compute buffer. The output buffer lives in
# pinned host memory. A row without one of them is a log line that did not parse, not a measurement.
EXPECTED_ON_GPU = {"model": "model", "kv": "KV", "compute": "compute"}
_GPU_DEVICE_RE = re.compile(r"^(CUDA|ROCm|HIP|Vulkan|MUSA|SYCL|CANN|OpenCL|Metal)")


def is_gpu_device(device: str) -> bool:
    """CUDA0, ROCm1, Vulkan0 (and a row split's CUDA0_Split) hold VRAM; CPU, CPU_Mapped, CPU_REPACK and pinned
    CUDA_Host are host RAM."""
    return bool(_GPU_DEVICE_RE.match(device)) and not device.endswith("_Host")


def missing_gpu_buffers(buffers_mib: dict[str, float], devices: list[str]) -> list[str]:
    """The expected buffers ("CUDA1 compute") that none of the config's GPUs' buffers holds: each of `devices`
    (expected_gpu_devices) must hold weights, KV and compute; a row split's CUDA1_Split counts as CUDA1's weights."""
    return [f"{device} {name}" for device in devices for kind, name in EXPECTED_ON_GPU.items()
            if not any(buffers_mib.get(f"{held}/{kind}", 0) > 0 for held in (device, f"{device}_Split"))]


def gpu_buffers_by_device(buffers_mib: dict[str, float]) -> dict[str, dict[str, float]]:
    """llama.cpp's GPU buffers per device and kind ({"CUDA1": {"compute": 292.43, ...}}), devices in name order:
    every view of one config's VRAM per device reads them so."""
    devices: dict[str, dict[str, float]] = {}
    for key in sorted(buffers_mib):
        device, _, kind = key.partition("/")
        if is_gpu_device(device):
            devices.setdefault(device, {})[kind] = buffers_mib[key]
    return devices


@dataclass(frozen=True)
class Memory(Record):
    """Memory of one config. Buffers are llama.cpp's own accounting (MiB); NVML figures sit beside them."""

    # llama.cpp buffers, MiB, keyed "<device>/<kind>" e.g. "CUDA0/model", "CPU_Mapped/model", "CUDA_Host/compute".
    buffers_mib: dict[str, float] = field(default_factory=dict)
    # the llama.cpp log lines each buffers_mib figure was read from, by the same key: every number traces to its source
    source_lines: dict[str, list[str]] = field(default_factory=dict)
    gpu_model_mib: float = 0.0
    gpu_kv_mib: float = 0.0
    gpu_compute_mib: float = 0.0
    gpu_output_mib: float = 0.0
    host_model_mib: float = 0.0
    host_kv_mib: float = 0.0
    host_compute_mib: float = 0.0
    # NVML; None where there is no GPU (never a zero that looks like a measurement).
    gpu_total_mib: float | None = None
    nvml_device_used_before_mib: float | None = None
    nvml_device_used_after_mib: float | None = None
    nvml_process_mib: float | None = None
    nvml_peak_device_mib: float | None = None
    cuda_context_mib: float | None = None  # nvml_process_mib - gpu_buffers_mib: see with_cuda_context
    host_rss_peak_mib: float = 0.0
    # NVML per-process memory on each of the config's GPUs, by llama.cpp's name of it ("CUDA1"); nvml_process_mib is
    # their sum. Empty where NVML did not answer, and on results measured before (format 3 and earlier).
    nvml_process_by_device_mib: dict[str, float] = field(default_factory=dict)

    @property
    def has_gpu(self) -> bool:
        return self.gpu_total_mib is not None

    @property
    def gpu_buffers_mib(self) -> float:
        """llama.cpp's GPU buffers together: model + KV + compute + output, MiB."""
        return round(self.gpu_model_mib + self.gpu_kv_mib + self.gpu_compute_mib + self.gpu_output_mib, 2)

    def with_cuda_context(self) -> Memory:
        """This memory with cuda_context_mib as every build measures it: NVML process memory after the run minus the
        GPU buffers (the CUDA context, cuBLAS workspace and ggml's pool). None without an NVML process figure.

        Measured before the model loaded instead, it read 3.2 MiB under llama-cpp-python 0.3.30 and 518 MiB under
        0.3.36 on one H200: the builds create the context at different points, while this difference was ~670 MiB
        under both.
        """
        context = None if self.nvml_process_mib is None else round(self.nvml_process_mib - self.gpu_buffers_mib, 2)
        return dataclasses.replace(self, cuda_context_mib=context)

    @property
    def needed_mib(self) -> float | None:
        """GPU memory the config needs: NVML's per-process figure (buffers + CUDA context) when known, else the
        buffers alone (no NVML, no context figure). None without a GPU."""
        if not self.has_gpu:
            return None
        if self.nvml_process_mib is not None:
            return self.nvml_process_mib
        return self.gpu_buffers_mib

    def needed_by_device(self) -> dict[str, float] | None:
        """GPU memory needed on each GPU (what "fits on N x size" judges): NVML's per-process figure of each when
        measured, else each device's llama.cpp buffers. None without a GPU, or where a row split's buffer (one
        figure over every GPU) leaves the share of each unknown."""
        if not self.has_gpu:
            return None
        by_device = gpu_buffers_by_device(self.buffers_mib)
        gpus = {device for device in by_device if not device.endswith("_Split")}  # a split buffer spans them
        if self.nvml_process_by_device_mib and gpus <= set(self.nvml_process_by_device_mib):
            return dict(self.nvml_process_by_device_mib)
        if len(by_device) <= 1:
            return {device: need for device in by_device or ["GPU"] for need in [self.needed_mib]}
        if any(device.endswith("_Split") for device in by_device):
            return None
        return {device: round(sum(kinds.values()), 2) for device, kinds in by_device.items()}

    @property
    def needed_card_mib(self) -> float | None:
        """GPU memory the config needs on its fullest card: what "fits on N x size" holds against the size (on one
        GPU, needed_mib). None without a GPU, or where a row split leaves each card's share unknown."""
        per_card = self.needed_by_device()
        return max(per_card.values()) if per_card else None

    @property
    def vram_gib(self) -> float | None:
        """The seed's metric: GPU model + KV + compute buffers, GiB. None without a GPU."""
        if not self.has_gpu:
            return None
        return (self.gpu_model_mib + self.gpu_kv_mib + self.gpu_compute_mib) / 1024


# What each field of a Fingerprint is part of, declared with the field: the environment's identity (environment_id),
# the machine that regress compares night to night, and the environments table the warehouse keeps.
_IDENTITY = {"identity": True, "machine": True, "stored": True}
_MACHINE = {"machine": True, "stored": True}
_BUILD: dict[str, bool] = {}  # the build's own: none of the machine's


@dataclass(frozen=True)
class Fingerprint(Record):
    """Where a number was measured. Regressions compare only like with like."""

    gpu_name: str = field(default="", metadata=_IDENTITY)
    gpu_count: int = field(default=0, metadata=_IDENTITY)
    gpu_driver: str = field(default="", metadata=_MACHINE)
    cuda_version: str = field(default="", metadata=_MACHINE)
    compute_capability: str = field(default="", metadata=_MACHINE)
    cpu_model: str = field(default="", metadata=_IDENTITY)
    cpu_cores: int = field(default=0, metadata=_IDENTITY)
    ram_gib: float = field(default=0.0, metadata={"stored": True})  # kept, never compared as a machine change
    llama_cpp_commit: str = field(default="", metadata=_BUILD)
    llama_cpp_python_version: str = field(default="", metadata=_BUILD)
    build_flags: str = field(default="", metadata=_BUILD)
    backend: str = field(default="", metadata=_IDENTITY)  # cpu | cuda
    # the machine's host name: a new host is an environment change, but neither part of environment_id nor stored
    host: str = field(default="", metadata={"machine": True})

    @property
    def environment_id(self) -> str:
        import hashlib

        raw = "|".join(str(getattr(self, name)) for name in ENVIRONMENT_ID_FIELDS)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _fingerprint_fields(part: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Fingerprint) if f.metadata.get(part))


ENVIRONMENT_ID_FIELDS = _fingerprint_fields("identity")  # what environment_id hashes
MACHINE_FIELDS = _fingerprint_fields("machine")  # what "the machine changed" (regress) compares
ENVIRONMENT_FIELDS = _fingerprint_fields("stored")  # what the warehouse keeps of an environment


@dataclass(frozen=True)
class Roofline(Record):
    """How close decode came to the memory-bandwidth bound: bytes read per token / bandwidth."""

    active_bytes_per_token: int = 0
    gpu_bytes_per_token: int = 0
    host_bytes_per_token: int = 0
    gpu_bandwidth_gbs: float | None = None
    host_bandwidth_gbs: float | None = None
    bound_tg_ts: float | None = None
    fraction_of_bound: float | None = None


NO_HOST_ENERGY = "host energy not measured"  # said wherever the host's energy would stand and RAPL did not measure it
ENERGY_MIN_WINDOW_S = 1.0  # NVML's energy counter updates in steps: a shorter window is flagged
ENERGY_AGREEMENT_PCT = 5.0  # the counter and the power samples' integral must agree this closely, or it is flagged
POWER_INSTANT = "instant"  # power samples from NVML's NVML_FI_DEV_POWER_INSTANT field
# power samples from nvmlDeviceGetPowerUsage: a 1-s trailing average on Ampere (except GA100) and newer, instantaneous
# before; the only reading before measured-night format 5
POWER_USAGE = "power_usage"


@dataclass(frozen=True)
class TestEnergy(Record):
    """GPU energy of one test (pp or tg) over its measured window: its counted repetitions, repeated until the window
    lasts ENERGY_MIN_WINDOW_S. NVML's energy counter is the figure; the integral of the power samples checks it."""

    __test__ = False  # not a pytest class

    tokens: int  # tokens processed in the window
    window_s: float
    counter_j: float | None  # NVML's total energy counter, end minus start; None: this GPU has no counter
    sampled_j: float | None  # integral of the power samples over the window; None: too few samples
    n_samples: int = 0
    power_avg_w: float | None = None  # the counter's energy over the window's time (the samples' mean without it)
    power_peak_w: float | None = None
    host_j: float | None = None  # the CPU packages' RAPL energy over the window; None: host energy not measured
    flags: list[str] = field(default_factory=list)  # why the figure is suspect (short window, disagreement)

    @property
    def j_per_tok(self) -> float | None:
        return None if self.counter_j is None or not self.tokens else round(self.counter_j / self.tokens, 6)

    @property
    def host_j_per_tok(self) -> float | None:
        return None if self.host_j is None or not self.tokens else round(self.host_j / self.tokens, 6)

    @property
    def agreement_pct(self) -> float | None:
        """How far the samples' integral is from the counter, % of the counter."""
        if self.counter_j is None or self.sampled_j is None or not self.counter_j:
            return None
        return round(abs(self.sampled_j - self.counter_j) / self.counter_j * 100, 2)


@dataclass(frozen=True)
class Energy(Record):
    """Energy of one config's pp and tg tests. A figure that was not measured is None, and a reason says why."""

    pp: TestEnergy | None = None
    tg: TestEnergy | None = None
    idle_w: float | None = None  # the GPU's power with the model loaded, before the tests
    power_limit_w: float | None = None  # the board's power management limit
    gpu_reason: str = ""  # why the GPU figures are absent; "" when measured (or for results stored before energy)
    host_reason: str = ""  # why host_j is absent, e.g. "host energy not measured: no RAPL"
    power_source: str = ""  # what the power samples read: POWER_INSTANT or POWER_USAGE; "" when none were taken

    @property
    def power_peak_w(self) -> float | None:
        peaks = [t.power_peak_w for t in (self.pp, self.tg) if t and t.power_peak_w is not None]
        return max(peaks) if peaks else None

    @property
    def agreement_pct(self) -> float | None:
        """The worse of the two tests' counter-vs-samples agreements."""
        found = [t.agreement_pct for t in (self.pp, self.tg) if t and t.agreement_pct is not None]
        return max(found) if found else None

    @property
    def note(self) -> str:
        """The reasons and flags in words, for a printer and the validation frame ("" when all is measured)."""
        flags = [f"{name}: {flag}" for name, t in (("pp", self.pp), ("tg", self.tg)) if t for flag in t.flags]
        return "; ".join(x for x in (self.gpu_reason, *flags, self.host_reason) if x)


@dataclass(frozen=True)
class BenchResult(Record):
    """What one bench child reports for one config. Only `status == "ok"` rows carry measurements."""

    config: BenchConfig
    status: Status
    error: str = ""
    pp: TestResult | None = None
    tg: TestResult | None = None
    generation: GenerationResult | None = None
    quality: QualityResult | None = None
    memory: Memory = field(default_factory=Memory)
    n_overridden_tensors: int = 0  # tensors llama.cpp placed in CPU memory because of our override
    n_threads: int = 0
    flash_attn: str = ""
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    roofline: Roofline = field(default_factory=Roofline)
    started_at: str = ""
    duration_s: float = 0.0
    load_s: float = 0.0
    # the model file's size on the worker that benched it, read there: validate runs elsewhere and compares this
    # with config.model.file_bytes (None: the file was not there to read)
    file_bytes_on_disk: int | None = None
    energy: Energy = field(default_factory=Energy)  # GPU (NVML) and host (RAPL) energy of the pp and tg tests

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The measured-night format. 1: no version field. 2: cuda_context_mib is NVML process memory minus the GPU buffers,
# and Memory keeps its source_lines. 3: each result records the model file's size as the bench read it. 4: configs
# carry gpus, split_mode and tensor_split, the runner pins the GPUs, and NVML's process figure is read on each GPU.
# 5: Energy records its power_source (NVML's instant power field where the driver has it).
MEASURED_NIGHT_VERSION = 5
# Why a result read from a measured night written before energy readings has none (its worker never measured it).
ENERGY_PREDATES_WORKER = "energy not measured: measured by a vramwatch worker older than energy readings"


@dataclass(frozen=True)
class MeasuredNight(Record):
    """The GPU half of a night, as one document: what `vramwatch measure` writes and `vramwatch ingest` reads.

    Reading one (from_dict, hence from_json) migrates an older format to this one, so every reader sees one format.
    """

    build: BuildRecord
    results: list[BenchResult]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    format_version: int = MEASURED_NIGHT_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasuredNight:
        version = data.get("format_version", 1)
        if version > MEASURED_NIGHT_VERSION:
            raise UserError(f"this measured night has format version {version}; this vramwatch reads up to "
                            f"{MEASURED_NIGHT_VERSION}", "upgrade vramwatch on the ingest side to the version that "
                            "measured the night")
        night = super().from_dict(data)
        if version == 1:  # its cuda_context_mib was read before the model loaded; it had no source lines
            results = [dataclasses.replace(r, memory=r.memory.with_cuda_context()) for r in night.results]
            night = dataclasses.replace(night, results=results)
        if version <= 2:  # no size read by the bench: an ok row's child had checked that the tensor data fits the file
            results = [dataclasses.replace(r, file_bytes_on_disk=r.config.model.file_bytes) if r.ok else r
                       for r in night.results]
            night = dataclasses.replace(night, results=results)
        if version <= 3:
            night = dataclasses.replace(night, results=[_unpinned(r) for r in night.results])
        if version <= 4:  # its power samples, where it took any, came from GetPowerUsage; a worker from before
            # energy readings wrote no energy at all: absent, and the row says why
            night = dataclasses.replace(night, results=[
                _sampled_power_usage(r) if "energy" in stored
                else dataclasses.replace(r, energy=Energy(gpu_reason=ENERGY_PREDATES_WORKER))
                for r, stored in zip(night.results, data.get("results", []))])
        return dataclasses.replace(night, format_version=MEASURED_NIGHT_VERSION)

    def night_key(self) -> str:
        """What identifies this measured night in the warehouse: a hash of its build and results (not of how long the
        stages took), so ingesting the same night again is recognised whatever run id it comes under."""
        measured = {"build": self.build.to_dict(), "results": [r.to_dict() for r in self.results]}
        return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()


def _sampled_power_usage(result: BenchResult) -> BenchResult:
    energy = result.energy
    if not any(t and t.n_samples for t in (energy.pp, energy.tg)):
        return result
    return dataclasses.replace(result, energy=dataclasses.replace(energy, power_source=POWER_USAGE))


def _unpinned(result: BenchResult) -> BenchResult:
    """A result of format 3 or earlier: no GPU was pinned, so on a machine with several llama.cpp split the layers
    over all of them. Its buffers say so: it is filed as the layer split it was (gpus = the GPUs holding buffers, a
    new series, not its one-GPU name's), and NVML's process figure, read on the first GPU alone, is kept as that
    GPU's and no longer stands for the whole need."""
    devices = [d for d in gpu_buffers_by_device(result.memory.buffers_mib) if not d.endswith("_Split")]
    if len(devices) <= 1:
        return result
    memory = result.memory
    first = {devices[0]: memory.nvml_process_mib} if memory.nvml_process_mib is not None else {}
    memory = dataclasses.replace(memory, nvml_process_by_device_mib=first, nvml_process_mib=None)
    return dataclasses.replace(result, config=dataclasses.replace(result.config, gpus=len(devices)),
                               memory=memory.with_cuda_context())


ABSide = Literal["A", "B"]
AB_SIDES: tuple[ABSide, ...] = typing.get_args(ABSide)
AB_METRICS = ("pp", "tg")  # the llama-bench tests of a BenchResult an A/B samples


@dataclass(frozen=True)
class ABRun(Record):
    """A same-night A/B of one config: the previous build's engine (A, the reference) and tonight's (B), run in
    `processes` child processes each, interleaved A, B, A, B, ... on one machine.

    Each ok process gives one sample per test (its avg_ts): the variation between processes is the noise a verdict
    must see through, so the repetitions inside one process are averaged away, not counted as samples.
    """

    config_id: str  # tonight's (B's) config
    llama_cpp_commit_a: str
    llama_cpp_python_version_a: str
    llama_cpp_commit_b: str
    llama_cpp_python_version_b: str
    processes: int  # per side
    # metric -> side -> one figure per ok process, in order: the tests' avg_ts ("pp", "tg") and every other figure
    # the A/B judges (rows.AB_JUDGED: "pp_j_per_tok", ...), as measured
    samples_ts: dict[str, dict[str, list[float]]]
    statuses: dict[str, list[Status]]  # side -> the status of each of its processes, in order
    failures: list[str] = field(default_factory=list)  # one line per failed process: which, its status, its error
    seconds: float = 0.0  # wall time of all its processes: what it cost of the night's A/B budget


# --------------------------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class ValidatedNight(Record):
    """The gate's verdict: rows fit for history, rows quarantined with the expectations they failed, and how each
    expectation of the suite came out (what the report shows, so no one needs Data Docs to read it)."""

    accepted: list[BenchResult]
    quarantined: list[QuarantinedResult]
    data_docs_path: str = ""
    expectations: list[ExpectationOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class ExpectationOutcome(Record):
    """One expectation of the validation suite over one night: passed or not, and on what."""

    name: str  # the suite's short name (e.g. pp_measured)
    expectation: str  # Great Expectations' type (e.g. expect_column_values_to_not_be_null)
    columns: list[str]
    success: bool
    unexpected_count: int | None = None  # None: the expectation counts no rows (or could not run)
    unexpected_examples: list[str] = field(default_factory=list)  # the configs of the first rows that failed it


@dataclass(frozen=True)
class QuarantinedResult(Record):
    result: BenchResult
    failed_expectations: list[str]


# --------------------------------------------------------------------------------------------- store


@dataclass(frozen=True)
class RunRecord(Record):
    """One nightly run as the warehouse knows it: when, which build, how it ended, how many rows it kept."""

    run_id: str
    night: str  # YYYY-MM-DD
    trigger: str  # scheduled | manual | test | ... (Airflow's run type, or the CLI's)
    status: str  # running | stored | failed | ...
    started: str  # ISO 8601, UTC
    ended: str  # empty while running
    build_version: str
    llama_cpp_python_version: str
    llama_cpp_commit: str
    backend: str
    n_results: int = 0
    n_quarantined: int = 0
    error: str = ""  # why its store (or its validation) failed, on a failed run


# --------------------------------------------------------------------------------------------- regress / alert

# Incident states, besides "acknowledged" (set by people, kept until resolved). People set accepted: the new level
# is intended and is the reference from the night the incident opened.
OPEN, RESOLVED, ACCEPTED = "open", "resolved", "accepted"
CLOSED_STATES = (RESOLVED, ACCEPTED)


class IncidentKind(enum.StrEnum):
    """What an incident is about; the detectors in vramwatch.regress produce these."""

    VRAM = "vram"  # a llama.cpp buffer grew beyond the matrix's policy
    VRAM_IMPROVED = "vram_improved"
    NO_LONGER_FITS = "no_longer_fits"  # a config that fit a GPU size of the policy needs more than it now
    THROUGHPUT = "throughput"
    ENERGY = "energy"  # a same-night A/B confirmed that a build's token costs more energy (J/token) beyond the policy
    STOPPED_FITTING = "stopped_fitting"  # ok -> oom
    FAILING = "failing"  # ok -> timeout, crashed, invalid_measurement, ...
    QUARANTINED = "quarantined"  # ran, but validation kept its row out of history
    VANISHED = "vanished"  # in the previous run, absent tonight
    OFFLOAD_STOPPED = "offload_stopped"  # an offload run whose override moved no tensor
    GPU_LOST = "gpu_lost"  # the matrix ran on a GPU last time and without one tonight
    ENVIRONMENT_CHANGED = "environment_changed"  # driver, CUDA, GPU, host or backend differ from the last run
    SERIES_CHANGED = "series_changed"  # a matrix edit changed a config's settings: a new series, not a regression


# Notes: said in the night's report, opened and closed at once, never paged.
NOTE_KINDS = frozenset({IncidentKind.VRAM_IMPROVED, IncidentKind.ENVIRONMENT_CHANGED, IncidentKind.SERIES_CHANGED})


@dataclass(frozen=True)
class Incident(Record):
    """A persistent regression of one kind, across the configs that share it."""

    incident_id: int | None
    kind: str  # an IncidentKind
    metric: str  # e.g. gpu_model_mib, tg_avg_ts
    state: str  # one of the states above
    configs: list[str]
    summary: str
    delta_mib: float | None = None
    delta_pct: float | None = None
    build_before: str = ""
    build_after: str = ""
    opened_night: str = ""
    is_new: bool = False  # opened tonight
    escalated: bool = False  # an open incident that grew tonight beyond the policy: it pages again
    changes: list[str] = field(default_factory=list)  # per config, what changed exactly (the report's first lines)
    bisection: BisectResult | None = None  # the search for the release or commit that made the change, once run
    # delta_mib and delta_pct are its size tonight; these, the size it last paged with (opened or escalated)
    paged_delta_mib: float | None = None
    paged_delta_pct: float | None = None
    resolved_by: str = ""  # the llama.cpp commit of the night it resolved
    # False while the change came with a GPU swap on a build-change night (build or GPU: not separable): shown first,
    # paged once a later night on the new GPU keeps it
    separable: bool = True
    # Attribution: what changed that night among the candidate causes ("llama.cpp a -> b", "gpu_driver x -> y", ...)
    # and which of them the evidence cleared, each line starting with the cause it clears ("llama.cpp a -> b:
    # same-night A/B tg 1.00x [...]").
    causes: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)

    @property
    def pages(self) -> bool:
        return (self.is_new or self.escalated) and self.separable and self.kind not in NOTE_KINDS

    def growth(self) -> str:
        """"grew from +13.50 MiB to +20.00 MiB" while its size differs from the size it paged with, else ""."""
        for then, now, unit in ((self.paged_delta_mib, self.delta_mib, " MiB"), (self.paged_delta_pct, self.delta_pct,
                                                                                 "%")):
            if then is not None and now is not None:
                if round(then, 2) == round(now, 2):
                    return ""
                return f"{'grew' if abs(now) > abs(then) else 'shrank'} from {then:+.2f}{unit} to {now:+.2f}{unit}"
        return ""

    def resolution(self) -> str:
        """How a resolved incident ended, in one line: the build it resolved under, and whether that is the build that
        showed it (a blip: gone without a fix) or another (fixed); "" for an open one or a note."""
        if self.state != RESOLVED or self.kind in NOTE_KINDS:
            return ""
        build = self.resolved_by[:8] or "?"
        if self.kind == IncidentKind.GPU_LOST:  # the machine's doing, whatever the build
            how = f"its GPU is back, under llama.cpp {build}"
        elif self.resolved_by == self.build_after:
            how = f"a blip: gone under the same llama.cpp {build}"
        else:
            how = f"fixed by llama.cpp {build}"
        return f"Resolved: {self.summary} ({how})"

    def headlines(self) -> list[str]:
        """What the report's and the alert's first lines say of it: each config's exact change and its cause."""
        return [f"{change}, {self.blamed()}" for change in self.changes] or [self.summary]

    def blamed(self) -> str:
        """The causes the evidence leaves, in words: the builds, or the machine change when the build is the same
        or was cleared (an unchanged build is never named as a cause)."""
        cleared = {line.split(" ", 1)[0] for line in self.cleared}  # what kind of cause: llama.cpp, gpu_driver, ...
        left = [c for c in self.causes if c.split(" ", 1)[0] not in cleared]
        if not self.causes:
            left = [builds_changed(self.build_before, self.build_after)]
        said = " or ".join(left) if left else "no candidate cause left (" + "; ".join(self.cleared) + ")"
        return said + (f" (cleared: {'; '.join(self.cleared)})" if self.cleared and left else "")

    @property
    def is_closed(self) -> bool:
        return self.state in CLOSED_STATES


def builds_changed(before: str, after: str) -> str:
    """The build change in words; an unchanged build is said as such, never as "a -> a"."""
    if before and before == after:
        return f"same llama.cpp build {after[:8]}"
    return f"llama.cpp {before[:8] or '?'} -> {after[:8] or '?'}"


@dataclass(frozen=True)
class NightSummary(Record):
    """What the alert and the DAG's last task know about a night."""

    night: str
    run_id: str
    report_md: str
    report_html: str
    n_results: int
    n_quarantined: int
    incidents: list[Incident]


ABOutcome = Literal["slower", "faster", "no change", "not slower", "inconclusive"]


@dataclass(frozen=True)
class ABVerdict(Record):
    """What a same-night A/B says about one metric (vramwatch.regress.ab.compare states the rule).

    A figure the samples could not give (too few processes) is None, and `reason` says why.
    """

    metric: str  # "pp" or "tg"
    n_a: int  # ok processes on each side
    n_b: int
    median_a: float | None  # tokens/s: the side's geometric mean (the field kept its first name for stored nights)
    median_b: float | None
    ratio: float | None  # median_b / median_a: below 1 is slower
    ci_low: float | None  # interval of the ratio, at `confidence`
    ci_high: float | None
    confidence: float
    p_value: float | None  # one-sided: of "B is slower than A by more than the policy"
    verdict: ABOutcome
    reason: str
    min_detectable: float | None = None  # the smallest slowdown (a fraction) this A/B would have called slower
    # a figure where higher is worse (J/token): its figures as measured (a ratio above 1 is worse), its verdict in
    # the words of `worded` ("slower" is a rise beyond the policy)
    higher_is_worse: bool = False

    p_any: float | None = None  # one-sided: of "B is slower than A at all" (the night's screen for watching)

    @property
    def worded(self) -> str:
        """The verdict in the figure's own words: "higher" for a J/token that rose beyond the policy."""
        if not self.higher_is_worse:
            return self.verdict
        return {"slower": "higher", "faster": "lower", "not slower": "not higher"}.get(self.verdict, self.verdict)

    def describe(self) -> str:
        """One line: "tg 0.81x [0.77, 0.85] (95% CI, 5 v 5 processes, p=0.008): slower"."""
        ratio = f" {self.ratio:.2f}x" if self.ratio is not None else ""
        interval = (f" [{self.ci_low:.2f}, {self.ci_high:.2f}] ({self.confidence:.0%} CI, "
                    if self.ci_low is not None and self.ci_high is not None else " (")
        p_value = f", p={self.p_value:.3f}" if self.p_value is not None else ""
        why = f" ({self.reason})" if self.verdict == "inconclusive" else ""
        sign = "+" if self.higher_is_worse else "-"
        could = f", could detect {sign}{self.min_detectable:.1%}" if self.min_detectable is not None else ""
        return (f"{self.metric}{ratio}{interval}{self.n_a} v {self.n_b} processes{p_value}{could}): "
                f"{self.worded}{why}")


@dataclass(frozen=True)
class ABComparison(Record):
    """A same-night A/B of one config and what it says of each metric."""

    run: ABRun
    verdicts: list[ABVerdict]


@dataclass(frozen=True)
class NightVerdicts(Record):
    """What the regress stage concluded about a night: its incidents, the same-night A/B comparisons it ran, and the
    checks it could not make, with why (the report never says "no regressions" for a check that did not judge)."""

    incidents: list[Incident]
    ab: list[ABComparison] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    watching: list[str] = field(default_factory=list)  # suspected, being confirmed: a drift seen once, an open A/B
    measured: str = ""  # what the night judged, in a few words: what an all-clear rests on


# --------------------------------------------------------------------------------------------- prune


@dataclass(frozen=True)
class PruneResult(Record):
    """What prune removed from a disk, and what it kept: builds (by key) or nights' GX Data Docs (by date)."""

    kept: list[str]  # build keys or nights, newest first
    removed: list[str]
    in_use: list[str]  # build keys skipped because their lock was held
    paths: list[str] = field(default_factory=list)  # everything removed (or, dry run, that would be)
    freed_bytes: int = 0
    dry_run: bool = False
    unit: str = "build"  # what kept and removed hold: "build" or "night"

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        kept = ", ".join(self.kept) if len(self.kept) <= 4 else f"{self.kept[0]} ... {self.kept[-1]}"
        return (f"{verb} {self.freed_bytes / 2**30:.1f} GiB: removed {len(self.removed)} {self.unit}(s), kept "
                f"{len(self.kept)} ({kept or 'none'})"
                + (f", {len(self.in_use)} in use left for next time" if self.in_use else ""))


# --------------------------------------------------------------------------------------------- bisect

BisectLevel = Literal["release", "commit"]
BISECT_LEVELS: tuple[BisectLevel, ...] = typing.get_args(BisectLevel)
BisectVerdict = Literal["good", "bad", "skipped"]


@dataclass(frozen=True)
class BisectRequest(Record):
    """What a bisection is asked, by whoever asks: the llamacpp_bisect DAG's params and the conf the nightly triggers
    it with are this record as JSON, `vramwatch bisect` has one flag per field it can use, pipeline.bisect takes it.
    incident_id and run_id say where the DAG stores the result; a search alone (the CLI) has no use for them."""

    config: str = field(metadata=about("the config: model/quant/mode@hash as the report and incidents name it (the "
                                       "hash may be left out)", "ID"))
    good: str = field(metadata=about("a build without the change: a release version, or (level commit) a llama.cpp "
                                     "commit", "REF"))
    bad: str = field(metadata=about("a build with the change, like good", "REF"))
    level: BisectLevel = field(default="release", metadata=about(
        "release: llama-cpp-python versions of the matrix's source; commit: llama.cpp commits (release versions "
        "given as ends stand for the commits they vendor)"))
    metric: str = field(default="gpu_compute_mib", metadata=about(
        "what changed: a llama.cpp buffer DEVICE/KIND (CUDA0/compute, CPU/compute), a memory component "
        "(gpu_compute_mib), or pp / tg for throughput (same-night A/B per step)"))
    repository: str = field(default="", metadata=about(
        "level commit: the llama.cpp repository, a URL or a local mirror (default: the matrix's git location, else "
        "upstream)", "URL_OR_PATH"))
    bad_figure: float | None = field(default=None, metadata=about(
        "the bad build's figure when known (a VRAM incident's, same GPU model): the bad build is then not built or "
        "measured; the good one always is", "MIB"))
    incident_id: int | None = field(default=None, metadata=about("the incident the result belongs to", cli=False))
    run_id: str = field(default="", metadata=about("the night that opened it: its report is written again with the "
                                                   "result", cli=False))


@dataclass(frozen=True)
class BisectStep(Record):
    """One build the bisection measured: an endpoint (role good/bad) or a candidate between them."""

    ref: str  # llama-cpp-python version (release level) or llama.cpp commit (commit level)
    role: str  # good | bad (the endpoints, measured first) | candidate
    verdict: BisectVerdict
    figure: float | None = None  # MiB for a buffer, B/A median ratio for throughput; None: not measured (reason)
    reason: str = ""  # why a candidate was skipped (its build's error, a failed bench, an inconclusive A/B)
    build_s: float = 0.0  # wall time of build_engine for it (a reused build takes seconds)
    bench_s: float = 0.0
    llama_cpp_commit: str = ""


@dataclass(frozen=True)
class Culprit(Record):
    """The first bad release or commit, with where to read about it."""

    ref: str
    subject: str = ""  # the commit's subject line; "llama-cpp-python X" for a release
    date: str = ""  # commit date (ISO 8601); empty for a release (the index does not say)
    link: str = ""
    llama_cpp_commit: str = ""


@dataclass(frozen=True)
class BisectResult(Record):
    """What a bisection found for one config, or where it stopped and why (`stopped` empty = it finished)."""

    config_id: str
    level: BisectLevel
    metric: str  # a buffer ("CUDA0/compute"), a Memory field ("gpu_compute_mib") or a throughput test ("tg")
    unit: str  # MiB, or "x" (throughput: the candidate's median over the good build's)
    good: str
    bad: str
    figure_good: float | None = None
    figure_bad: float | None = None
    candidates: int = 0  # refs strictly between good and bad
    culprit: Culprit | None = None
    last_good: str = ""  # the narrowed range: the culprit lies after last_good, at or before first_bad
    first_bad: str = ""
    last_good_commit: str = ""  # their llama.cpp commits: what a commit-level bisection of a release result searches
    first_bad_commit: str = ""
    steps: list[BisectStep] = field(default_factory=list)
    stopped: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. that each candidate quantized its own model file
    started_at: str = ""
    duration_s: float = 0.0

    @property
    def finished(self) -> bool:
        return self.culprit is not None and not self.stopped

    @property
    def cost(self) -> str:
        """What the search spent, for the report, the alert and the page: "5 builds: 11 min build, 20 s bench"."""
        build_s = sum(step.build_s for step in self.steps)
        bench_s = sum(step.bench_s for step in self.steps)
        return f"{len(self.steps)} builds: {_duration(build_s)} build, {_duration(bench_s)} bench"

    @property
    def commit_range(self) -> str:
        """What a release-level culprit leaves to a commit-level search: the llama.cpp commits of the last good and
        the first bad release ("" at the commit level, or when either is unknown)."""
        if self.level != "release" or not (self.last_good_commit and self.first_bad_commit):
            return ""
        return f"{self.last_good_commit[:12]}..{self.first_bad_commit[:12]}"

    def headline(self) -> str:
        """One line for the report, the alert and the page."""
        figures = (f" ({_figure(self.figure_good, self.unit)} -> {_figure(self.figure_bad, self.unit)})"
                   if self.figure_good is not None and self.figure_bad is not None else "")
        if self.culprit is not None:
            return f"{self.metric}{figures} changed in {self.level} {self.culprit.ref}: {self.culprit.subject}"
        where = f" between {self.last_good} and {self.first_bad}" if self.last_good or self.first_bad else ""
        return f"{self.metric}{figures}: bisection stopped{where}: {self.stopped}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _figure(value: float, unit: str) -> str:
    return f"{value:.3f}x" if unit == "x" else f"{value:.2f} {unit}"
