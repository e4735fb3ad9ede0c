#!/usr/bin/env bash
# One round on the lent GPU machine (16 cores, torch 2.11.0+cu130, Python 3.12, sm_90, offline), run detached so
# that calls with a 10-minute limit can collect it. What it measures, in order:
#   1. issue 12: the stable-ABI wheels built on the CPU machine (torch 2.14.1 headers, Python 3.11), carried
#      over unchanged, verified here (`buildtool verify`: numerics fwd+bwd in every dtype, shims, Mamba / Mamba2
#      smoke with the stable causal-conv1d + mamba-ssm pair);
#   2. in parallel, started before 1: the stable wheels built here (profile gpu-dev-stable, torch 2.11), the full-ABI wheels of the
#      same versions (sm_90; the speed and SASS baseline) and with FAMILY=1 the other families (profile gpu-dev: mamba-ssm
#      2.2.2, Vim's fork, VMamba's selective_scan; issue 14's declared-requirements check runs on them on the CPU
#      machine);
#   3. verify of the stable wheels built here, kernel speed stable vs full, SASS stable vs full (every kernel);
#   4. issue 18: scripts/gpu-bound.sh once the builds are over (cold builds with a fresh object cache against
#      their bound, with and without the jobserver; fatbin load costs);
#   5. issue 18: the CUDA-13 arch policy's six-target, size-compressed mamba-ssm wheel (its size).
# Carry (CARRY, default .carry/gpu, git-ignored): whl/ (pure-Python wheels for cp312: pydantic, rich, pyelftools,
# abi3audit... and einops), cache/sources/ (sdists and git archives of every package above), cpu-wheels/ (the
# two stable wheels from the CPU machine).
#   scripts/gpu-round.sh start DIR | wait DIR SECONDS | pack DIR OUT
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
C=${CARRY:-.carry/gpu}
case $C in /*) ;; *) C=$PWD/$C ;; esac
export BUILDTOOL_CACHE_DIR=$C/cache PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
CC=linux-x86_64-cp312-cu130-torch2.11-causal-conv1d-1.7.0
MAMBA=linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.3.2.post1
# FAMILY=1: also build the other families (mamba-ssm 2.2.2, Vim's fork, VMamba's selective_scan) here
if [ -n "${FAMILY:-}" ]; then
  FAMILY="linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-2.2.2 linux-x86_64-cp312-cu130-torch2.11-mamba-ssm-vim-1.1.1
linux-x86_64-cp312-cu130-torch2.11-selective-scan-0.0.2"
fi
BUILD=(python3 -m buildtool build --use-current-env --toolchain system --json)

step() { echo "$(date -u +%T) [${SECONDS}s] $*" >> "$out/steps.log"; }

job() {
  step "start: $(nproc) cores, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader), $(git log -1 --oneline 2>/dev/null)"
  python3 -c "import torch, sys; print(torch.__version__, torch.version.cuda, sys.version.split()[0])" >> "$out/steps.log" 2>&1
  sha256sum "$C"/cpu-wheels/*.whl > "$out/cpu-wheels.sha256"
  step "2. builds: stable (gpu-dev-stable) | full-ABI cc + mamba sm_90 | families (gpu-dev)"
  "${BUILD[@]}" --profile gpu-dev-stable --dist "$out/w/stable-gpu" > "$out/build-stable.json" 2> "$out/build-stable.log" &
  local stable=$!
  "${BUILD[@]}" "$CC" "$MAMBA" --archs 9.0 --dist "$out/w/full-gpu" > "$out/build-full.json" 2> "$out/build-full.log" &
  local full=$!
  if [ -n "${FAMILY:-}" ]; then
    # shellcheck disable=SC2086
    "${BUILD[@]}" $FAMILY --dist "$out/w/family" > "$out/build-family.json" 2> "$out/build-family.log" &
  fi
  local family=$!
  step "1. verify the stable wheels carried from the CPU machine"
  python3 -m buildtool verify "$C/cpu-wheels" --json "$out/verify-stable-cpu.json" > "$out/verify-stable-cpu.log" 2>&1
  step "1. done rc=$?"
  wait $stable; step "2. stable built rc=$?"
  step "3. verify the stable wheels built here"
  python3 -m buildtool verify "$out/w/stable-gpu" --json "$out/verify-stable-gpu.json" > "$out/verify-stable-gpu.log" 2>&1
  step "3. verify done rc=$?"
  wait $full; step "2. full built rc=$?"
  step "3. kernel speed: stable (built here) vs full ABI"
  python3 benchmarks/kernel_speed.py --ours "$out/w/stable-gpu" --upstream "$out/w/full-gpu" --rounds 5 --reps 100 \
    --out "$out/speed-stable-vs-full.json" > "$out/speed.md" 2> "$out/speed.err"
  step "3. speed done rc=$?"
  for pkg in causal_conv1d:causal_conv1d_cuda mamba_ssm:selective_scan_cuda; do
    dist=${pkg%%:*} ext=${pkg##*:}
    full_so=$(unzip -Z1 "$out"/w/full-gpu/"$dist"-*.whl | grep "^$ext\..*\.so$")
    stable_so=$(unzip -Z1 "$out"/w/stable-gpu/"$dist"-*.whl | grep "_C_stable.abi3.so$")
    python3 benchmarks/sass_compare.py "$out"/w/stable-gpu/"$dist"-*.whl "$out"/w/full-gpu/"$dist"-*.whl \
      --pair "$(basename "$stable_so")=$full_so" --json "$out/sass-stable-vs-full-$dist.json" >> "$out/sass.md" 2>&1
    step "3. SASS $dist rc=$?"
  done
  wait $family; step "2. families built rc=$?"
  step "4. compile bound (scripts/gpu-bound.sh)"
  CARRY=$C bash scripts/gpu-bound.sh run "$out/bound" > "$out/bound.log" 2>&1
  step "4. done rc=$?"
  step "5. six-target size-mode mamba-ssm wheel (arch policy of CUDA 13.0)"
  "${BUILD[@]}" "$MAMBA" --dist "$out/w/six" > "$out/build-six.json" 2> "$out/build-six.log"
  step "5. done rc=$?"
  ls -l "$out"/w/*/ > "$out/wheels.txt" 2>&1
  sha256sum "$out"/w/*/*.whl >> "$out/wheels.txt" 2>&1
  step "done"
}

out=${2:?usage: gpu-round.sh start DIR | wait DIR SECONDS | pack DIR OUT}
case $1 in
start)
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$C"/whl/*.whl || exit 3
  export -f job step; export out C BUILDTOOL_CACHE_DIR CC MAMBA FAMILY
  export BUILD_STR="${BUILD[*]}"
  # shellcheck disable=SC2016  # expanded by the inner bash
  setsid bash -c 'BUILD=($BUILD_STR); job' < /dev/null > "$out/job.log" 2>&1 &
  echo started ;;
wait)
  t0=$(date +%s)
  while ! grep -q " done$" "$out/steps.log" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$3" ]; do sleep 10; done
  cat "$out/steps.log" ;;
pack)
  dest=${3:?pack DIR OUT}
  cp build/logs/*.log "$out/" 2>/dev/null
  tar czf "$dest/results.tgz" --exclude='*.whl' -C "$(dirname "$out")" "$(basename "$out")"
  # the device tool returns only names of letters, digits, '.', '_' and '-': '+' travels as '__'
  for w in "$out"/w/family/*.whl; do [ -f "$w" ] && n=$(basename "$w") && cp "$w" "$dest/${n//+/__}"; done
  ls -l "$dest" ;;
esac
