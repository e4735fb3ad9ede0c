#!/usr/bin/env bash
# The final configuration on a lent GPU machine, in one detached job: mamba-ssm 2.3.2.post1 (sm_90) upstream
# setup.py vs buildtool cold (run twice: the host's wall times vary by about 15% between runs) and warm; then
# kernel speed of the buildtool wheel against upstream's (benchmarks/kernel_speed.py) and `buildtool verify`.
# Usage: scripts/gpu-confirm.sh start|wait OUTDIR [SECONDS]. Done when OUTDIR/rc exists.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
cmd=${1:?usage: gpu-confirm.sh start|wait OUTDIR [SECONDS]}
out=${2:?usage: gpu-confirm.sh start|wait OUTDIR [SECONDS]}
mkdir -p "$out"
export BUILDTOOL_CACHE_DIR=${BUILDTOOL_CACHE_DIR:-$PWD/.carry/cache} PYTHONUNBUFFERED=1

job() {
  step() { echo "$(date -u +%T) $*" >> "$out/steps.log"; }
  step "mamba build benchmark"
  python3 benchmarks/bench.py --use-current-env --archs 9.0 --upstream-timeout 400 \
    --cell linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1 \
    --keep-wheels "$out/wheels/ours" --keep-upstream-wheels "$out/wheels/upstream" --variant "repeat=" \
    --out "$out/bench-mamba.json" > "$out/bench-mamba.md" 2> "$out/bench-mamba.err"
  step "kernel speed"
  python3 benchmarks/kernel_speed.py --ours "$out/wheels/ours" --upstream "$out/wheels/upstream" --rounds 5 \
    --reps 100 --out "$out/speed-mamba.json" > "$out/speed-mamba.md" 2> "$out/speed-mamba.err"
  step "verify"
  python3 -m buildtool verify "$out/wheels/ours" --json "$out/verify.json" --markdown "$out/verify.md" \
    > "$out/verify.log" 2>&1
  echo $? > "$out/rc"
  step "done"
}

case "$cmd" in
start)
  rm -f "$out/rc"
  export -f job
  export out
  setsid bash -c job < /dev/null > "$out/job.log" 2>&1 &
  echo "started pid $!"
  ;;
wait)
  limit=${3:-540}
  t0=$(date +%s)
  while [ ! -f "$out/rc" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 10; done
  cat "$out/steps.log" 2>/dev/null
  if [ -f "$out/rc" ]; then echo "finished rc=$(cat "$out/rc")"; else echo "still running"; fi
  ;;
*)
  echo "usage: gpu-confirm.sh start|wait OUTDIR [SECONDS]" >&2; exit 2
  ;;
esac
