#!/usr/bin/env bash
# Issue 18's measurements on a lent 16-core GPU machine (offline), in one call of about 5 minutes:
#   1. mamba-ssm 2.3.2.post1, sm_90, all 16 cores: buildtool cold build (size-compressed fatbin, costliest
#      TUs first) against its bound max(slowest TU alone, CPU-s / cores); the slowest TU compiled again alone;
#   2. at the same time on separate cores:
#      - causal-conv1d 1.7.0, sm_90, pinned to 2 cores (taskset: jobs, -split-compile and the bound all see
#        2 cores), the same cold-build benchmark: the 2-core target on a quiet machine;
#      - device code per target and fatbin compression mode for mamba's bwd_bf16_real TU (benchmarks/fatbin_size.py,
#        one nvcc per target on the other 14 cores), extrapolated to whole wheels from the measured nine-arch wheel;
#   3. on the GPU (benchmarks/fatbin_load.py): loading the sm_90 code per compression mode (eager, and lazy
#      with every kernel fetched = what first launches pay), and PTX JIT of compute_90 against the SASS;
#   4. with PRIORITIES_BEFORE=S and fewer than S seconds gone: the mamba cold build again with --priorities.
# Usage: scripts/gpu-bound.sh OUTDIR CARRY_DIR (CARRY_DIR: the source cache in cache/).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${1:?usage: gpu-bound.sh OUTDIR CARRY_DIR}
carry=${2:?usage: gpu-bound.sh OUTDIR CARRY_DIR}
case $carry in /*) ;; *) carry=$PWD/$carry ;; esac
mkdir -p "$out" /tmp/logs
export BUILDTOOL_CACHE_DIR=$carry/cache PYTHONUNBUFFERED=1
MAMBA=linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1
CONV=linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0
TREE=build/cells/$MAMBA/src
step() { echo "$(date -u +%T) [${SECONDS}s] $*" | tee -a "$out/steps.log"; }
logs() { cp build/logs/*.log /tmp/logs/ 2>/dev/null; tar czf "$out/logs.tgz" -C /tmp logs; }

step "start: $(nproc) cores, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), $(git log -1 --oneline)"
step "mamba cold build (16 cores)"
python3 benchmarks/bench.py --use-current-env --archs 9.0 --skip-upstream --cell "$MAMBA" \
  --out "$out/bench-mamba.json" > /tmp/logs/bench-mamba.log 2>&1
logs
cuda_home=$(python3 -c "from buildtool import toolchain; print(toolchain.resolve('13.0', 'linux-x86_64', 'system').cuda_home)")
python3 -c "from buildtool.build.buildenv import env_from_python; import sys; from pathlib import Path; print(env_from_python(Path(sys.executable)).model_dump_json())" > /tmp/buildenv.json
step "causal-conv1d cold build on cores 0-1 | device code sizes on cores 2-15 (toolkit $cuda_home)"
taskset -c 0,1 python3 benchmarks/bench.py --use-current-env --archs 9.0 --skip-upstream --cell "$CONV" \
  --out "$out/bench-causal-2core.json" > /tmp/logs/bench-causal.log 2>&1 &
conv=$!
U=csrc/selective_scan
# one nvcc per target, all at once (FB_UNITS / FB_SASS / FB_PTX override; fwd_bf16 is measured on the 2-core host)
taskset -c 2-15 python3 benchmarks/fatbin_size.py --tree "$TREE" --spec selective_scan_cuda-2.3 \
  $(for u in ${FB_UNITS:-selective_scan_bwd_bf16_real}; do echo --unit $U/$u.cu; done) \
  --sass "${FB_SASS:-7.5,8.0,9.0,10.0,11.0,12.0}" --ptx "${FB_PTX:-9.0,12.0}" --buildenv /tmp/buildenv.json \
  --cuda-home "$cuda_home" --jobs 14 --work /tmp/fb --extrapolate docs/bench/local-2core-mamba-9arch-size.json \
  --policy "coverage=7.5,8.0,9.0,10.0,11.0,12.0" \
  --policy "coverage+PTX=7.5,8.0,9.0,10.0,11.0,12.0+12.0" --out "$out/fatbin-size.json" > /tmp/logs/fatbin-size.log 2>&1
step "device code sizes done"
python3 benchmarks/fatbin_load.py --work /tmp/fb --cuda-home "$cuda_home" \
  $(for u in ${FB_UNITS:-selective_scan_bwd_bf16_real}; do echo --stem $u; done) --sm 90 --out "$out/fatbin-load.json" \
  > /tmp/logs/fatbin-load.log 2>&1
step "GPU loads done; waiting for causal-conv1d"
wait "$conv"
logs
step "causal-conv1d done"
if [ "$SECONDS" -lt "${PRIORITIES_BEFORE:-0}" ]; then
  step "mamba cold build with --priorities (cheaper TUs niced)"
  rm -rf "build/cells/$MAMBA"
  fresh=$(mktemp -d) && cp -r "$carry/cache/sources" "$fresh/"
  BUILDTOOL_CACHE_DIR=$fresh CCACHE_DISABLE=1 python3 -m buildtool build "$MAMBA" --archs 9.0 --use-current-env \
    --toolchain system --dist /tmp/dist-prio --priorities --json > "$out/priorities.json" 2>> /tmp/logs/priorities.err
  logs
fi
step "done"
