#!/usr/bin/env bash
# Issue 18's measurements on a lent 16-core GPU machine (offline), about 11 minutes: run it detached
# (`start`), collect it (`wait`, `pack`) in later calls.
#   1. mamba-ssm 2.3.2.post1, sm_90, all 16 cores (benchmarks/bench.py, a core-busy sample each second):
#      upstream's setup.py, then buildtool cold twice; each against its bound max(slowest TU alone,
#      CPU-s / cores), the first build's slowest TU compiled again alone, and with -split-compile 1 and 16
#      and nvcc --time (--serial-part): how much of it is serial;
#   2. causal-conv1d 1.7.0, sm_90, 16 cores: buildtool cold;
#   3. unless SKIP_LOAD is set, on the GPU (benchmarks/fatbin_load.py): loading the sm_90 code per fatbin
#      compression mode and PTX JIT of compute_90, from images compiled on the CPU machine (CARRY/fb-work).
# CARRY: cache/sources (sdists), whl/ (pure-Python wheels for cp312 and ninja >= 1.13), fb-work/.
#   scripts/gpu-bound.sh start OUT | wait OUT SECONDS | pack OUT DEST | run OUT (in the foreground)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
C=${CARRY:-.carry/gpu}
case $C in /*) ;; *) C=$PWD/$C ;; esac
export BUILDTOOL_CACHE_DIR=$C/cache PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH
MAMBA=linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1
CONV=linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0

step() { echo "$(date -u +%T) [${SECONDS}s] $*" >> "$out/steps.log"; }

job() {
  step "start: $(nproc) cores, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), ninja $(ninja --version), $(git log -1 --oneline 2>/dev/null)"
  python3 -c "import torch, sys; print(torch.__version__, torch.version.cuda, sys.version.split()[0])" >> "$out/steps.log" 2>&1
  step "1. mamba: upstream, buildtool twice (16 cores)"
  python3 benchmarks/bench.py --use-current-env --archs 9.0 --cell "$MAMBA" --variant "again=" --serial-part \
    --out "$out/bench-mamba.json" > "$out/bench-mamba.log" 2>&1
  step "1. done rc=$?"
  cp build/logs/*.log "$out/" 2>/dev/null
  step "2. causal-conv1d: default (16 cores)"
  python3 benchmarks/bench.py --use-current-env --archs 9.0 --skip-upstream --cell "$CONV" \
    --out "$out/bench-causal.json" > "$out/bench-causal.log" 2>&1
  step "2. done rc=$?"
  [ -n "${SKIP_LOAD:-}" ] && { step "done"; return; }
  cuda_home=$(python3 -c "from buildtool import toolchain; print(toolchain.resolve('13.0', 'linux-x86_64', 'system').cuda_home)")
  step "3. fatbin loads on the GPU (toolkit $cuda_home)"
  cp -r "$C/fb-work" /tmp/fb
  python3 benchmarks/fatbin_load.py --work /tmp/fb --cuda-home "$cuda_home" --stem selective_scan_fwd_bf16 --sm 90 \
    --out "$out/fatbin-load.json" > "$out/fatbin-load.log" 2>&1
  step "3. done rc=$?"
  step "done"
}

out=${2:?usage: gpu-bound.sh start OUT | wait OUT SECONDS | pack OUT DEST}
case $1 in
start)
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$C"/whl/*.whl || exit 3
  export -f job step; export out C MAMBA CONV
  setsid bash -c job < /dev/null > "$out/job.log" 2>&1 &
  echo started ;;
run)
  mkdir -p "$out" && job ;;
wait)
  t0=$(date +%s)
  while ! grep -q " done$" "$out/steps.log" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$3" ]; do sleep 10; done
  cat "$out/steps.log" ;;
pack)
  dest=${3:?pack OUT DEST}
  tar czf "$dest/bound.tgz" -C "$(dirname "$out")" "$(basename "$out")"
  ls -l "$dest" ;;
esac
