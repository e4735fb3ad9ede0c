#!/usr/bin/env bash
# Issue 12 on the lent GPU machine (offline; copy this file to .carry/abit/run.sh and carry .carry/abit with
# pure-Python wheels in whl/, the two sdists under cache/sources/sdist/<sha256>/ and the CPU-built stable
# wheels in cpu-wheels/). Results of the run are in docs/stable-abi.md.
# abi-track's GPU job (issue 12), detached: build the stable-ABI wheels here (torch 2.11 / Python 3.12),
# the full-ABI wheels of the same versions (sm_90) for the speed comparison, verify the stable wheels built
# here and those carried from the CPU machine (torch 2.14.1 / Python 3.11), and time stable vs full.
#   run.sh start OUT | wait OUT SECONDS
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
C=.carry/abit
export BUILDTOOL_CACHE_DIR=$PWD/$C/cache PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
out=$2; mkdir -p "$out"
step() { echo "$(date -u +%T) $*" >> "$out/steps.log"; }
job() {
  step "build full in the background (speed baseline, sm_90)"
  python3 -m buildtool build linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0 \
    linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1 --archs 9.0 --use-current-env --toolchain system \
    --dist "$out/w/full-gpu" --json > "$out/build-full.json" 2> "$out/build-full.log" &
  full=$!
  if ls $C/cpu-wheels/*.whl >/dev/null 2>&1; then
    step "verify stable built on the CPU machine (torch 2.14.1 / Python 3.11)"
    sha256sum $C/cpu-wheels/*.whl > "$out/cpu-wheels.sha256"
    python3 -m buildtool verify $C/cpu-wheels --json-out "$out/verify-stable-cpu.json" > "$out/verify-stable-cpu.log" 2>&1
  fi
  step "build stable (gpu-dev-stable)"
  python3 -m buildtool build --profile gpu-dev-stable --use-current-env --toolchain system --dist "$out/w/stable-gpu" \
    --json > "$out/build-stable.json" 2> "$out/build-stable.log"
  step "verify stable built here"
  python3 -m buildtool verify "$out/w/stable-gpu" --json-out "$out/verify-stable-gpu.json" > "$out/verify-stable-gpu.log" 2>&1
  step "wait for the full build"
  wait $full
  step "kernel speed stable (built here) vs full"
  python3 benchmarks/kernel_speed.py --ours "$out/w/stable-gpu" --upstream "$out/w/full-gpu" --rounds 5 --reps 100 \
    --out "$out/speed-stable-vs-full.json" > "$out/speed.md" 2> "$out/speed.err"
  step done
}
case $1 in
start)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $C/whl/*.whl || exit 3
  nproc; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch,sys;print(torch.__version__, sys.version.split()[0])"
  export -f job step; export out C
  setsid bash -c job < /dev/null > "$out/job.log" 2>&1 &
  echo started ;;
wait)
  t0=$(date +%s)
  while ! grep -q " done$" "$out/steps.log" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$3" ]; do sleep 10; done
  cat "$out/steps.log"; tail -2 "$out"/build-*.log 2>/dev/null ;;
esac
