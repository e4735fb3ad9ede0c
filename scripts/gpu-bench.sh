#!/usr/bin/env bash
# The headline build benchmark on a lent 16-core GPU machine (offline): upstream setup.py vs buildtool for the
# current line, sm_90, against the machine's own torch. Detached like gpu-session.sh; results in $1.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu-bench.sh OUTDIR [UPSTREAM_TIMEOUT_S]}
mkdir -p "$out"
export BUILDTOOL_CACHE_DIR=${BUILDTOOL_CACHE_DIR:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
python3 benchmarks/bench.py --use-current-env --archs 9.0 --upstream-timeout "${2:-300}" \
  --cell linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1 \
  --cell linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0 \
  --out "$out/bench-h200.json" > "$out/bench.md" 2> "$out/bench.err"
echo $? > "$out/rc"
