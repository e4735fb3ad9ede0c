#!/usr/bin/env bash
# The headline build benchmark on a lent 16-core GPU machine (offline): upstream setup.py vs buildtool,
# sm_90, against the machine's own torch. Cells default to mamba-ssm 2.3.2.post1 (causal-conv1d's upstream
# build alone runs past 570 s there; its comparison runs on the 2-core machine). Results in $1; the cold
# builds' wheels are kept in dist/ for `buildtool verify`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu-bench.sh OUTDIR [UPSTREAM_TIMEOUT_S] [CELL...]}
timeout_s=${2:-600}
shift 2 2>/dev/null || shift $#
cells=("$@")
[ ${#cells[@]} -gt 0 ] || cells=(linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1)
mkdir -p "$out"
export BUILDTOOL_CACHE_DIR=${BUILDTOOL_CACHE_DIR:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
args=()
for c in "${cells[@]}"; do args+=(--cell "$c"); done
python3 benchmarks/bench.py --use-current-env --archs 9.0 --upstream-timeout "$timeout_s" "${args[@]}" \
  --keep-wheels dist --out "$out/bench-h200.json" > "$out/bench.md" 2> "$out/bench.err"
echo $? > "$out/rc"
