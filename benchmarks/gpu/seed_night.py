"""The GPU half of the seed reproduction, as one detached plan: the nightly's own stages (vramwatch.pipeline:
build -> models -> bench) over several matrices, plus the engine-vs-llama-bench fidelity check.

`python benchmarks/gpu/seed_night.py --rehearse` runs the same plan with tiny models on this machine's demo engine
(CPU is fine), to check the plan before spending GPU time. `--only STEP...` runs the build and just those steps, so a
fresh machine can finish what an earlier lease left unmeasured without redoing the rest.

Run by seed_night.sh, which starts it once (setsid: it outlives the 10-minute device calls) and then only waits.
Steps run in priority order, each writing <out>/<step>.json when it ends, so a lease that ends early still leaves
the most important results. Everything a step prints goes to <out>/logs/<step>.log; <out>/driver.log has one line
per event. Sizes: DeepSeek F16 source 33 GB and its quants 34 GB in /dev/shm (RAM), gone before Phi's steps; the Phi
Q8_0 source (44.5 GB) on the disk when it has room, since both sources together would not leave RAM for the quants;
gpt-oss-20b's MXFP4 source (13 GB, benched as it is) in RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "include"))

from vramwatch import pipeline  # noqa: E402
from vramwatch.config import Matrix, Paths, SynthSource, load_matrix  # noqa: E402
from vramwatch.models import prepare
from vramwatch.models.specs import get_spec  # noqa: E402
from vramwatch.models.synth import file_name, planned_file_bytes  # noqa: E402
from vramwatch.records import MeasuredNight  # noqa: E402

OUT = Path(os.environ.get("SEED_NIGHT_OUT", "/root/vwout"))
DISK = Path(os.environ.get("SEED_NIGHT_DISK", "/root/vwdisk"))  # a disk folder, not RAM: the Phi source
VERSION = "0.3.36"
MATRICES = REPO / "benchmarks" / "gpu"
SCALE = "full"  # "tiny" when rehearsing
# --rehearse: tiny models on a shared CPU, where a tg128 of a tiny model takes tens of seconds: every step runs, smaller
REHEARSAL_KNOBS = {"n_prompt": 32, "n_gen": 8, "reps": 1}
FIDELITY_REPS = 5


def load(name: str) -> Matrix:
    """benchmarks/gpu/<name>.yaml; when rehearsing, at tiny scale and the rehearsal's sizes, with the demo matrix's
    engine and generation test (16 tokens, not 100)."""
    matrix = load_matrix(MATRICES / f"{name}.yaml")
    if SCALE == "full":
        return matrix
    models = [m.model_copy(update={"source": SynthSource(synth=m.source.synth, scale=SCALE)}) for m in matrix.models]
    demo = load_matrix("demo")
    return matrix.model_copy(update={"build": demo.build, "generation": demo.generation, "models": models,
                                     **REHEARSAL_KNOBS})


def log(message: str) -> None:
    with open(OUT / "driver.log", "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {message}\n")


@contextmanager
def step(name: str):
    """Time a step, send everything it prints to its own log, and log how it ended (a failure does not stop the plan)."""
    log(f"{name}: start")
    started = time.monotonic()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with open(OUT / "logs" / f"{name}.log", "a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        outcome = "ok"
        try:
            yield
        except BaseException as exc:  # noqa: BLE001 - a failed step is recorded, the next one still runs
            outcome = f"failed: {type(exc).__name__}: {exc}"[:300]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
    log(f"{name}: {outcome} in {time.monotonic() - started:.1f} s")


def synthesize(model: str, out_dir: Path, vocab_dir: Path) -> subprocess.Popen:
    """Write a full-scale synthetic source in the background (numpy, one core), logging to logs/synth-<model>.log."""
    code = ("import sys; from pathlib import Path; from vramwatch.models.specs import get_spec; "
            "from vramwatch.models.synth import write_gguf; "
            "print(write_gguf(get_spec(sys.argv[1], sys.argv[4]), Path(sys.argv[2]), Path(sys.argv[3])))")
    sink = open(OUT / "logs" / f"synth-{model}.log", "w")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen([sys.executable, "-c", code, model, str(out_dir), str(vocab_dir), SCALE], stdout=sink,
                            stderr=subprocess.STDOUT)


def wait_synth(proc: subprocess.Popen, model: str) -> None:
    code = proc.wait()
    log(f"synth {model}: exit {code}")
    if code:
        raise RuntimeError(f"synthesizing {model} failed: see logs/synth-{model}.log")


def measure(name: str, matrix: Matrix | None = None, version: str = VERSION) -> MeasuredNight:
    """pipeline.measure of benchmarks/gpu/<name>.yaml (or the matrix given) into <out>/<name>.json, logged."""
    measured = pipeline.measure(matrix or load(name), version)
    (OUT / f"{name}.json").write_text(measured.to_json(indent=1))
    for r in measured.results:
        log(f"  {r.config.config_id}: {r.status} vram_gib={r.memory.vram_gib and round(r.memory.vram_gib, 3)} "
            f"pp={r.pp and round(r.pp.avg_ts, 1)} tg={r.tg and round(r.tg.avg_ts, 1)} moved={r.n_overridden_tensors}"
            + (f" error={r.error[:200]}" if r.error else ""))
    log(f"  stages {measured.stage_seconds}")
    return measured


def fidelity(name: str, model: Path) -> None:
    sizes = (["--reps", str(FIDELITY_REPS)] if SCALE == "full" else
             [f"--{knob.replace('_', '-')}={value}" for knob, value in REHEARSAL_KNOBS.items()])
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "engine_vs_llama_bench.py"), "--model", str(model),
                    *sizes, "--out", str(OUT / f"{name}.json")], check=True)
    for row in json.loads((OUT / f"{name}.json").read_text())["rows"]:
        log(f"  {row['mode']} {row['test']}: llama-bench {row['llama_bench_ts']:.1f} engine {row['engine_ts']:.1f} "
            f"ratio {row['ratio']}")


def vocab_files(matrix: Matrix, version: str = VERSION) -> Path:
    """llama.cpp's vocab GGUFs before the engine exists, so the sources are written while it builds: from the bundle
    (build source "path"); when rehearsing (the demo's PyPI build, already made), from the engine's source tree."""
    if matrix.build.source != "path":
        return prepare.vocab_dir(pipeline.build_engine(matrix, version, record_build=False))
    vocab = OUT / "vocab"
    vocab.mkdir(exist_ok=True)
    bundle = REPO / matrix.build.location / f"llama_cpp_python-{version}.tar.gz"
    subprocess.run(["tar", "xzf", str(bundle), "-C", str(vocab), "--wildcards", "*ggml-vocab-deepseek-llm.gguf",
                    "*ggml-vocab-phi-3.gguf", "*ggml-vocab-llama-bpe.gguf"], check=True)
    return next(vocab.rglob("ggml-vocab-deepseek-llm.gguf")).parent


def model_path(measured: MeasuredNight, quant: str) -> Path:
    return Path(next(r.config.model.path for r in measured.results if r.config.model.quant == quant))


STEPS = ("deepseek-a", "fidelity", "deepseek-sweep", "deepseek-b", "phi", "fidelity-phi", "phi-b",  # after "build"
         "gptoss", "gptoss-nommap")  # gpt-oss-20b with its weights mmapped, then loaded into memory (use_mmap false)
IN_RAM = {"deepseek": "deepseek-moe-16b", "gptoss": "gpt-oss-20b"}  # step prefix -> the source it needs in /dev/shm
NEEDS = {"fidelity": "deepseek-a", "fidelity-phi": "phi"}  # a fidelity step benches the file its measure step made


def chosen_steps(argv: list[str] | None = None) -> set[str]:
    """The steps asked for on the command line (all by default); --rehearse switches to tiny models."""
    global SCALE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny models on the demo engine, here")
    parser.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP",
                        help=f"run the build and just these steps, in plan order ({', '.join(STEPS)})")
    args = parser.parse_args(argv)
    only = set(args.only or STEPS)
    for fidelity_step, measure_step in NEEDS.items():
        if fidelity_step in only and measure_step not in only:
            parser.error(f"{fidelity_step} needs {measure_step}: add it to --only")
    if args.rehearse:
        SCALE = "tiny"
    return only


def main() -> None:
    only = chosen_steps()
    wanted = [s for s in STEPS if s in only]
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    paths = Paths()
    shm_synth = paths.models / "synth"
    shm_synth.mkdir(parents=True, exist_ok=True)
    log(f"plan start: build, {', '.join(wanted)}; models in {paths.models}, builds in {paths.builds}")
    in_ram = [model for prefix, model in IN_RAM.items() if any(s.startswith(prefix) for s in only)]
    needs_phi = any(s.startswith("phi") for s in only)

    with step("build"):  # the CUDA engine and llama-bench; the sources the steps need are written meanwhile
        first = load("deepseek-a")  # its build is every matrix's build
        vocab_dir = vocab_files(first)
        writing = {model: synthesize(model, shm_synth, vocab_dir) for model in in_ram
                   if not (shm_synth / file_name(get_spec(model, SCALE))).is_file()}
        phi_spec = get_spec("phi-3.5-moe", SCALE)
        DISK.mkdir(parents=True, exist_ok=True)
        phi_on_disk = shutil.disk_usage(DISK).free > planned_file_bytes(phi_spec, vocab_dir) + (4 << 30)
        if needs_phi:
            log(f"phi source: {'on disk, now' if phi_on_disk else 'in RAM by its prepare step'}")
        phi = (synthesize("phi-3.5-moe", DISK, vocab_dir) if needs_phi and phi_on_disk
               and not (DISK / file_name(phi_spec)).is_file() else None)
        build = pipeline.build_engine(first, VERSION, record_build=False)
        log(f"  build {build.status} {build.duration_s} s, llama.cpp {build.llama_cpp_commit[:12]}, "
            f"llama-bench {build.llama_bench or 'MISSING'} {build.error}")
        for model, writer in writing.items():
            wait_synth(writer, model)

    def phi_source() -> None:
        """The disk copy of Phi's source, linked where the models stage looks for it (once it is written)."""
        nonlocal phi
        if phi is not None:
            wait_synth(phi, "phi-3.5-moe")
            phi = None
        name = file_name(phi_spec)
        if (DISK / name).is_file() and not (shm_synth / name).is_symlink():
            (shm_synth / name).unlink(missing_ok=True)
            (shm_synth / name).symlink_to(DISK / name)

    measured: dict[str, MeasuredNight] = {}
    for name in wanted:
        with step(name):
            if name == "fidelity":  # the engine against llama-bench on the same libraries, both modes
                fidelity(name, model_path(measured["deepseek-a"], "Q4_K_M"))
            elif name == "fidelity-phi":
                fidelity(name, model_path(measured["phi"], "Q8_0"))
            else:
                if name.startswith("phi"):
                    phi_source()
                measured[name] = measure(name)
            if name == "deepseek-b":  # the last DeepSeek step: its files go, so RAM holds Phi's quants
                for done in [*shm_synth.glob(f"deepseek-moe-16b-{SCALE}-*"),
                             *(paths.models / "quantized").glob(f"deepseek-moe-16b-{SCALE}-*")]:
                    done.unlink()
    log("plan done")
    (OUT / "DONE").touch()


if __name__ == "__main__":
    main()
