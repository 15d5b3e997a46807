#!/usr/bin/env bash
# Every test (`make test`): build once, then run the unit tests and the five harnesses side by
# side — most of their time is waiting on servers (stand-ins that take their time, registries,
# an API server), not the CPU. Each harness's output goes to its own log, printed whole when it
# ends, with its wall time; the libtest summary lines come last.
#
#   IMGREP_TEST_JOBS   harnesses run at once (default 6: all; 1 runs them one after another)
#   IMGREP_TEST_ARGS   extra arguments for every test binary (e.g. a name filter)
set -uo pipefail
cd "$(dirname "$0")/.."
jobs="${IMGREP_TEST_JOBS:-6}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

start=$(date +%s)
if ! cargo test --no-run --locked 2>"$logs/build"; then
  cat "$logs/build"
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s"

# Longest first, so the slowest is never started last.
runs=("clouds:--test clouds" "openstack:--test openstack" "apiserver:--test apiserver" "registries:--test registries" "fast:--test fast" "unit:--lib --bins")
run() {
  local name="${1%%:*}" sel="${1#*:}" t0
  t0=$(date +%s)
  # shellcheck disable=SC2086
  cargo test --locked --no-fail-fast $sel -- ${IMGREP_TEST_ARGS:-} >"$logs/$name.log" 2>&1
  echo $? >"$logs/$name.rc"
  echo "$(( $(date +%s) - t0 ))" >"$logs/$name.secs"
}
export -f run
export logs

status=0
printf '%s\n' "${runs[@]}" | xargs -P "$jobs" -I{} bash -c 'run "$@"' _ {}
for r in "${runs[@]}"; do
  name="${r%%:*}"
  echo
  echo "==== $name ($(cat "$logs/$name.secs") s) ===="
  grep -vE '^\s+(Finished|Running|Compiling|Blocking)|^test result:|^test .* \.\.\. ok$|^running [0-9]+ tests?$|^$' "$logs/$name.log" || true
  [ "$(cat "$logs/$name.rc")" = 0 ] || status=1
done
echo
echo "==== per harness ===="
for r in "${runs[@]}"; do
  name="${r%%:*}"
  printf '%-11s %5s s  %s\n' "$name" "$(cat "$logs/$name.secs")" "$(grep -hE '^test result:' "$logs/$name.log" | awk '{p+=$4; f+=$6} END {printf "ok %d, failed %d", p, f}')"
done
echo "wall: $(( $(date +%s) - start )) s (build included)"
echo
grep -hE '^test result:' "$logs"/*.log
exit $status
