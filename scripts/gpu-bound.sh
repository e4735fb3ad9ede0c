#!/usr/bin/env bash
# Issue 18's measurements on a lent 16-core GPU machine (offline), in one call of under 10 minutes:
#   1. mamba-ssm 2.3.2.post1, sm_90: buildtool cold build (size-compressed fatbin, costliest TUs first)
#      against its bound max(slowest TU alone, CPU-s / cores); the slowest TU is compiled again alone;
#   2. device code per target and fatbin compression mode for two mamba TUs (benchmarks/fatbin_size.py,
#      16 nvcc at once), extrapolated to whole wheels from the measured nine-arch wheel;
#   3. on the GPU (benchmarks/fatbin_load.py): loading the sm_90 code per compression mode (eager, and lazy
#      with every kernel fetched = what first launches pay), and PTX JIT of compute_90 against the SASS;
#   4. the cold build again with --priorities (cheaper TUs niced), its compile against the CPU bound.
# Usage: scripts/gpu-bound.sh OUTDIR CARRY_DIR (CARRY_DIR: wheels in whl/, the source cache in cache/).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${1:?usage: gpu-bound.sh OUTDIR CARRY_DIR}
carry=${2:?usage: gpu-bound.sh OUTDIR CARRY_DIR}
mkdir -p "$out"
export BUILDTOOL_CACHE_DIR=$PWD/$carry/cache PYTHONUNBUFFERED=1
MAMBA=linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1
TREE=build/cells/$MAMBA/src
step() { echo "$(date -u +%T) $*" | tee -a "$out/steps.log"; }

step "start: $(nproc) cores, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), $(git log -1 --oneline)"
step "mamba cold build"
python3 benchmarks/bench.py --use-current-env --archs 9.0 --skip-upstream --cell "$MAMBA" \
  --out "$out/bench-mamba.json" > "$out/bench-mamba.log" 2>&1
cp "build/logs/$MAMBA.log" "$out/build-mamba.log" 2>/dev/null
cuda_home=$(python3 -c "from buildtool import toolchain; print(toolchain.resolve('13.0', 'linux-x86_64', 'system').cuda_home)")
python3 -c "from buildtool.build.buildenv import env_from_python; import sys; from pathlib import Path; print(env_from_python(Path(sys.executable)).model_dump_json())" > /tmp/buildenv.json
step "device code sizes (toolkit $cuda_home)"
U=csrc/selective_scan
python3 benchmarks/fatbin_size.py --tree "$TREE" --spec selective_scan_cuda-2.3 \
  --unit $U/selective_scan_fwd_bf16.cu --unit $U/selective_scan_bwd_bf16_real.cu \
  --sass 7.5,8.0,8.7,9.0,10.0,10.3,11.0,12.0,12.1 --ptx 9.0,12.0 --buildenv /tmp/buildenv.json \
  --cuda-home "$cuda_home" --jobs 16 --work /tmp/fb --extrapolate docs/bench/local-2core-mamba-9arch-size.json \
  --policy "upstream nine=7.5,8.0,8.7,9.0,10.0,10.3,11.0,12.0,12.1" --policy "coverage=7.5,8.0,9.0,10.0,11.0,12.0" \
  --policy "coverage+PTX=7.5,8.0,9.0,10.0,11.0,12.0+12.0" --out "$out/fatbin-size.json" > "$out/fatbin.log" 2>&1
step "GPU: load cost per compression mode, PTX JIT"
python3 benchmarks/fatbin_load.py --work /tmp/fb --cuda-home "$cuda_home" --stem selective_scan_fwd_bf16 \
  --stem selective_scan_bwd_bf16_real --sm 90 --out "$out/fatbin-load.json" >> "$out/fatbin.log" 2>&1
step "mamba cold build with --priorities (cheaper TUs niced)"
rm -rf "build/cells/$MAMBA"
fresh=$(mktemp -d) && cp -r "$carry/cache/sources" "$fresh/"
BUILDTOOL_CACHE_DIR=$fresh CCACHE_DISABLE=1 python3 -m buildtool build "$MAMBA" --archs 9.0 --use-current-env \
  --toolchain system --dist /tmp/dist-prio --priorities --json > "$out/priorities.json" 2>> "$out/steps.log"
step "done"
