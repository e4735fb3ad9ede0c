#!/usr/bin/env bash
# Everything the lent GPU machine is for, in one detached job: the mamba-ssm build benchmark (wheels kept),
# the GPU-machine cells (current line + every seed package, sm_90, this interpreter's torch), then
# `buildtool verify` over all wheels. Poll with: test -f $1/rc
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu-final.sh OUTDIR}
mkdir -p "$out"
export BUILDTOOL_CACHE_DIR=${BUILDTOOL_CACHE_DIR:-$PWD/.carry/cache} PYTHONUNBUFFERED=1
scripts/gpu-bench.sh "$out/bench" 600
python3 -m buildtool build --profile gpu-dev --use-current-env --toolchain system --json \
  > "$out/build-gpu-dev.json" 2> "$out/build.log"
python3 -m buildtool build linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0 --archs 9.0 \
  --use-current-env --toolchain system --json > "$out/build-causal-conv1d.json" 2>> "$out/build.log"
python3 -m buildtool verify dist/*.whl --json-out "$out/verify.json" --markdown "$out/verify.md" > "$out/verify.log" 2>&1
echo $? > "$out/rc"
