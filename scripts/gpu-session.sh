#!/usr/bin/env bash
# Build (and optionally verify) wheels on a lent GPU machine that has no network: torch comes from the
# machine's interpreter (--use-current-env), nvcc from the system toolkit, sources from a carried cache.
# The build runs detached (setsid) so a caller with a per-command time limit can collect it in a later
# call: `scripts/gpu-session.sh wait` waits again without starting anything.
#   scripts/gpu-session.sh start "<buildtool build args>"   # start (or keep) the detached build
#   scripts/gpu-session.sh wait [SECONDS]                   # wait for it, print progress
#   scripts/gpu-session.sh collect DIR                      # copy wheels, logs, summary into DIR
set -uo pipefail
cd "$(dirname "$0")/.."
STATE=${GPU_SESSION_STATE:-/tmp/gpu-session}
mkdir -p "$STATE"
export BUILDTOOL_CACHE_DIR=${BUILDTOOL_CACHE_DIR:-$PWD/.carry/cache}
export PYTHONUNBUFFERED=1

case "${1:-}" in
start)
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "build already running (pid $(cat "$STATE/pid"))"; exit 0
  fi
  rm -f "$STATE/rc"
  # shellcheck disable=SC2086
  setsid bash -c "python3 -m buildtool build $2 --json > '$STATE/summary.json' 2> '$STATE/build.log'; echo \$? > '$STATE/rc'" \
    < /dev/null > /dev/null 2>&1 &
  echo $! > "$STATE/pid"
  echo "started pid $(cat "$STATE/pid")"
  ;;
wait)
  limit=${2:-540}
  t0=$(date +%s)
  while [ ! -f "$STATE/rc" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
    sleep 15
    echo "[$(( $(date +%s) - t0 ))s] $(grep -aoE '[0-9]+/[0-9]+ [^ ]+' "$STATE/build.log" 2>/dev/null | tail -1)"
  done
  if [ -f "$STATE/rc" ]; then echo "build finished rc=$(cat "$STATE/rc")"; else echo "build still running"; fi
  ;;
collect)
  dest=$2; mkdir -p "$dest"
  cp "$STATE/summary.json" "$STATE/build.log" "$dest/" 2>/dev/null
  tar czf "$dest/logs.tgz" build/logs 2>/dev/null
  ;;
*) echo "usage: $0 start ARGS | wait [S] | collect DIR" >&2; exit 2 ;;
esac
