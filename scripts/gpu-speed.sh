#!/usr/bin/env bash
# Issue 8's measurements on a lent 16-core GPU machine (offline), as one detached job so that calls with a
# 10-minute limit can start it and collect it later. In order:
#   1. mamba-ssm 2.3.2.post1, sm_90: upstream setup.py vs buildtool cold (default: TU split + nvcc
#      -split-compile), warm, and two variants (no -split-compile, the earlier default; no TU split);
#   2. causal-conv1d 1.7.0, sm_90, the same comparison, in the background (upstream's bwd TU alone runs
#      about 10 minutes on one core), while the GPU compares kernel speed: buildtool's mamba wheel against
#      upstream's (benchmarks/kernel_speed.py);
#   3. causal-conv1d kernel speed, then `buildtool verify` over the buildtool wheels built here.
# The `confirm` job is the final configuration alone: mamba upstream vs buildtool cold (twice: the host's
# wall times vary by about 15% between loans) and warm, then kernel speed and `buildtool verify`.
# Usage: scripts/gpu-speed.sh start OUTDIR [full|confirm] | wait OUTDIR [SECONDS]. Done when OUTDIR/rc exists.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
cmd=${1:?usage: gpu-speed.sh start OUTDIR [full|confirm] | wait OUTDIR [SECONDS]}
out=${2:?usage: gpu-speed.sh start OUTDIR [full|confirm] | wait OUTDIR [SECONDS]}
mkdir -p "$out"
export BUILDTOOL_CACHE_DIR=${BUILDTOOL_CACHE_DIR:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
MAMBA=linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1
CONV=linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0

step() { echo "$(date -u +%T) $*" >> "$out/steps.log"; }

verify() {
  step "verify"
  python3 -m buildtool verify "$out/wheels/ours" --json-out "$out/verify.json" --markdown "$out/verify.md" \
    > "$out/verify.log" 2>&1
  echo $? > "$out/rc"
  step "done"
}

confirm() {
  step "mamba build benchmark"
  python3 benchmarks/bench.py --use-current-env --archs 9.0 --upstream-timeout 400 --cell "$MAMBA" \
    --keep-wheels "$out/wheels/ours" --keep-upstream-wheels "$out/wheels/upstream" --variant "repeat=" \
    --out "$out/bench-mamba.json" > "$out/bench-mamba.md" 2> "$out/bench-mamba.err"
  step "kernel speed"
  python3 benchmarks/kernel_speed.py --ours "$out/wheels/ours" --upstream "$out/wheels/upstream" --rounds 5 \
    --reps 100 --out "$out/speed-mamba.json" > "$out/speed-mamba.md" 2> "$out/speed-mamba.err"
  verify
}

full() {
  step "mamba build benchmark"
  python3 benchmarks/bench.py --use-current-env --archs 9.0 --upstream-timeout 400 --cell "$MAMBA" \
    --keep-wheels "$out/wheels/ours" --keep-upstream-wheels "$out/wheels/upstream" \
    --variant "no -split-compile (the earlier default)=--split-compile 1" \
    --variant "no TU split, -split-compile only=--no-split" \
    --out "$out/bench-mamba.json" > "$out/bench-mamba.md" 2> "$out/bench-mamba.err"
  step "causal-conv1d build benchmark (background)"
  python3 benchmarks/bench.py --use-current-env --archs 9.0 --upstream-timeout 800 --cell "$CONV" \
    --keep-wheels "$out/wheels/ours" --keep-upstream-wheels "$out/wheels/upstream" \
    --out "$out/bench-causal.json" > "$out/bench-causal.md" 2> "$out/bench-causal.err" &
  conv=$!
  step "mamba kernel speed"
  python3 benchmarks/kernel_speed.py --ours "$out/wheels/ours" --upstream "$out/wheels/upstream" \
    --out "$out/speed-mamba.json" > "$out/speed-mamba.md" 2> "$out/speed-mamba.err"
  step "waiting for the causal-conv1d benchmark"
  wait "$conv"
  step "causal-conv1d kernel speed"
  mkdir -p "$out/wheels/ours-conv" "$out/wheels/upstream-conv"
  cp "$out"/wheels/ours/causal_conv1d-*.whl "$out/wheels/ours-conv/" 2>/dev/null
  cp "$out"/wheels/upstream/causal_conv1d-*.whl "$out/wheels/upstream-conv/" 2>/dev/null
  python3 benchmarks/kernel_speed.py --ours "$out/wheels/ours-conv" --upstream "$out/wheels/upstream-conv" \
    --out "$out/speed-causal.json" > "$out/speed-causal.md" 2> "$out/speed-causal.err"
  verify
}

case "$cmd" in
start)
  if [ -f "$out/pid" ] && kill -0 "$(cat "$out/pid")" 2>/dev/null; then echo "already running"; exit 0; fi
  job=${3:-full}
  case "$job" in full|confirm) ;; *) echo "unknown job $job (full, confirm)" >&2; exit 2 ;; esac
  rm -f "$out/rc"
  export -f step verify confirm full
  export out MAMBA CONV
  setsid bash -c "$job" < /dev/null > "$out/job.log" 2>&1 &
  echo $! > "$out/pid"
  echo "started pid $(cat "$out/pid")"
  ;;
wait)
  limit=${3:-540}
  t0=$(date +%s)
  while [ ! -f "$out/rc" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 10; done
  cat "$out/steps.log" 2>/dev/null
  if [ -f "$out/rc" ]; then echo "finished rc=$(cat "$out/rc")"; else echo "still running"; fi
  ;;
*)
  echo "usage: gpu-speed.sh start OUTDIR [full|confirm] | wait OUTDIR [SECONDS]" >&2; exit 2
  ;;
esac
