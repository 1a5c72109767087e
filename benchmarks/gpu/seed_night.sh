#!/bin/bash
# The same command in every device call: starts seed_night.py once (detached, so it outlives the call), then waits
# up to SECONDS for it and copies what it has finished to $OUT (results.tgz: every <step>.json, a plan's summary .md
# and driver.log).
# Chain the calls while the machine is warm.
#   bash benchmarks/gpu/seed_night.sh 560 [restart] [--only STEP...]   (carry: device; see seed_night.py for the plan)
# PLAN=two_releases runs benchmarks/gpu/two_releases.py instead (issue 15's two releases and their A/B);
# PLAN=bisect_releases runs issue 18's release-level bisection (benchmarks/gpu/bisect_releases.py).
# PLAN=noise runs issue 25's process-to-process noise measurement (benchmarks/gpu/noise.py).
# PLAN=energy runs issue 27's energy per token, overhead and J/token noise (benchmarks/gpu/energy.py).
# restart: run the plan again from the top (the engine and model files already made are reused); what follows goes
# to seed_night.py when it starts.
# device/ is prepared here first:
#   vramwatch builds bundle --out device/bundle --python 3.12
#   pip download --only-binary :all: --python-version 3.12 --no-deps -d device/wheels pydantic pydantic-core \
#       annotated-types typing-inspection typing-extensions pyyaml gguf nvidia-ml-py tqdm packaging requests ...
# then the results become docs/results with benchmarks/seed_reproduction.py.
set -u
cd "$(dirname "$0")/../.."
seconds=${1:-560}; shift
restart=; [ "${1:-}" = restart ] && { restart=1; shift; }
work=/root/vwout
# The plan runs from a copy under /root: each device call lays the working tree anew, and the plan outlives calls.
repo=/root/vwrepo
plan=$repo/benchmarks/gpu/${PLAN:-seed_night}.py
export PYTHONPATH=/tmp/vwsite:$repo/include PYTHONUNBUFFERED=1 SEED_NIGHT_OUT=$work
export VRAMWATCH_CACHE_DIR=/root/vwcache VRAMWATCH_BUILDS_DIR=/root/vwbuilds VRAMWATCH_MODELS_DIR=/dev/shm/vw
[ -n "$restart" ] && { pkill -f "$plan"; sleep 2; rm -rf $work /dev/shm/vw/quantized/*.partial; }
# A bundle over one call's 64 MiB travels in halves (device/bundle-a, -b, one per call): each call adds its half.
for half in device/bundle-*; do [ -d "$half" ] && mkdir -p $repo/device/bundle && cp -rn "$half"/. $repo/device/bundle/; done
if [ ! -e $work/driver.log ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2
  df -h / /dev/shm | tail -2
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/vwsite device/wheels/*.whl 2>&1 | tail -2
  mkdir -p $work/logs $repo
  cp -r include benchmarks device $repo/
  (cd $repo && setsid nohup python3 "$plan" "$@" > $work/driver.out 2>&1 < /dev/null &)
  sleep 5
fi
deadline=$(( $(date +%s) + seconds ))
while [ ! -e $work/DONE ] && [ "$(date +%s)" -lt $deadline ] && pgrep -f "$plan" > /dev/null; do sleep 5; done
# one archive: a call brings back at most 8 files, and a whole plan writes more
(cd $work && tar czf "$OUT/results.tgz" $(ls *.json *.md 2>/dev/null) driver.log) && cp $work/driver.log "$OUT"/
cat $work/driver.out; cat $work/driver.log
latest=$(ls -t $work/logs/*.log 2>/dev/null | head -1)
[ -n "$latest" ] && { echo "--- tail of $latest"; tail -n 15 "$latest" | cut -c1-300; }
free -g | head -2; df -h / /dev/shm | tail -2
[ -e $work/DONE ] && echo "PLAN DONE" || { pgrep -f "$plan" > /dev/null && echo "PLAN RUNNING" || echo "PLAN STOPPED"; }
