#!/usr/bin/env bash
# The whole test suite: set-up, ruff, mpy-cross over firmware/ and protocol/, the ESP32 HAL type
# check, then pytest (CPython tests and the MicroPython-side tests on the real unix port) in
# three runs side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .

echo "== mpy-cross (every .py in firmware/ and protocol/)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
n=0
while IFS= read -r -d '' f; do
  mpy-cross -o "$out/x.mpy" "$f" || { echo "mpy-cross failed on $f"; exit 1; }
  n=$((n + 1))
done < <(find firmware protocol -name '*.py' -not -path '*/__pycache__/*' -print0)
echo "mpy-cross compiled $n files"

if [ -d firmware/lib/gasguard/hal ]; then
  echo "== mypy (ESP32 HAL against micropython-esp32-stubs)"
  bash scripts/typecheck-esp32.sh
fi

echo "== pytest"
# pytest's exit 5 (nothing collected) is a failure
verdict() { if [ "$1" = 5 ]; then echo "pytest collected no tests: that is a failure" >&2; echo 1; else echo "$1"; fi; }
set +e
if [ $# -gt 0 ]; then
  python -m pytest "$@"
  rc=$(verdict $?)
else
  # Three runs side by side, each its own process (a test may set the process's time zone or
  # hold an event loop, as Playwright's does; separate processes keep that to themselves): the
  # whole suite in one run took 25.8 minutes on a 2-core machine, most of it waiting on virtual
  # boards, brokers and databases rather than computing. Each lane's slowest tests are listed.
  lanes=("tests/regulator" "tests/tools hil_tests" "--ignore=tests/regulator --ignore=tests/tools --ignore=hil_tests")
  logs=() pids=()
  for lane in "${lanes[@]}"; do
    log=$(mktemp)
    # shellcheck disable=SC2086 # a lane is a list of arguments
    python -m pytest --durations=15 $lane >"$log" 2>&1 &
    pids+=($!) logs+=("$log")
  done
  rc=0
  for n in "${!lanes[@]}"; do
    wait "${pids[$n]}"
    code=$(verdict $?)
    echo "== pytest ${lanes[$n]} (exit $code)"
    cat "${logs[$n]}"
    rm -f "${logs[$n]}"
    if [ "$rc" = 0 ]; then rc=$code; fi
  done
fi
set -e
exit "$rc"
