#!/bin/bash
# GPU half of the seed reproduction, with the nightly's own stages (vramwatch.pipeline: build -> models -> bench),
# on an air-gapped GPU machine (Python 3.12 there). Prepare the carried folder here first:
#   vramwatch builds bundle --out device/bundle --python 3.12
#   pip download --only-binary :all: --python-version 3.12 --no-deps -d device/wheels pydantic pydantic-core \
#       annotated-types typing-inspection typing-extensions pyyaml gguf nvidia-ml-py tqdm packaging requests ...
# then run there, chaining calls while the machine is warm (builds and /dev/shm survive between them):
#   seed_run.sh build                                  CUDA engine; full-scale synthetic sources written meanwhile
#   seed_run.sh measure benchmarks/gpu/X.yaml OUT.json  prepare (quantize) and bench one matrix into $OUT/OUT.json
# and turn the results into docs/results with benchmarks/seed_reproduction.py.
set -u
cd "$(dirname "$0")/../.."
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/vwsite device/wheels/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/vwsite:$PWD/include PYTHONUNBUFFERED=1
export VRAMWATCH_CACHE_DIR=/root/vwcache VRAMWATCH_BUILDS_DIR=/root/vwbuilds VRAMWATCH_MODELS_DIR=/dev/shm/vw
if [ "$1" = build ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2; df -h / | tail -1
  mkdir -p /tmp/vocab && tar xzf device/bundle/llama_cpp_python-0.3.36.tar.gz -C /tmp/vocab --wildcards '*ggml-vocab-deepseek-llm.gguf' '*ggml-vocab-llama-bpe.gguf'
  vocab=$(dirname $(find /tmp/vocab -name 'ggml-vocab-deepseek-llm.gguf'))
  for model in deepseek-moe-16b gpt-oss-20b; do
    python3 -c "import sys; from pathlib import Path; from vramwatch.models.specs import get_spec; from vramwatch.models.synth import write_gguf
print(write_gguf(get_spec(sys.argv[1], 'full'), Path('/dev/shm/vw/synth'), Path(sys.argv[2])))" $model $vocab > $OUT/synth-$model.log 2>&1 &
  done
  python3 - <<'PY' 2>&1 | tee $OUT/build.log | grep -E "^\[builds\] (start|result|cmake|duration)|Error|error" | cut -c1-300
from vramwatch import pipeline
from vramwatch.config import load_matrix
record = pipeline.build_engine(load_matrix("benchmarks/gpu/gptoss.yaml"), "0.3.36", record_build=False)
print("BUILD", record.status, record.duration_s, record.artifact_bytes, record.llama_cpp_commit, record.python)
PY
  wait; tail -2 $OUT/synth-*.log; ls -la /dev/shm/vw/synth
else
  python3 - "$2" "$OUT/$3" <<'PY' 2>&1 | tee $OUT/${3%.json}.log | grep -E "^\[vramwatch\]|^MEASURED|Error|error:" | cut -c1-400
import sys
from pathlib import Path
from vramwatch import pipeline
from vramwatch.config import load_matrix
m = pipeline.measure(load_matrix(sys.argv[1]), "0.3.36")
Path(sys.argv[2]).write_text(m.to_json(indent=1))
for r in m.results:
    print("MEASURED", r.config.config_id, r.status, r.error[:150], "vram_gib", r.memory.vram_gib and round(r.memory.vram_gib, 3),
          "nvml", r.memory.nvml_process_mib, "ctx", r.memory.cuda_context_mib, "pp", r.pp and round(r.pp.avg_ts, 1),
          "tg", r.tg and round(r.tg.avg_ts, 1), "moved", r.n_overridden_tensors, "file", r.config.model.file_bytes)
print("MEASURED stages", m.stage_seconds)
PY
fi
df -h / /dev/shm | tail -2; echo "total $(( $(date +%s) - t0 )) s"
