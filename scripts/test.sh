#!/usr/bin/env bash
# The whole test suite: set-up, ruff, mpy-cross over firmware/ and protocol/, the ESP32 HAL type
# check, then pytest (CPython tests and the MicroPython-side tests on the real unix port) in
# two lanes side by side.
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
  # Two lanes side by side, each run in it its own process (a test may set its process's time
  # zone or hold an event loop, as Playwright's does; separate processes keep that to
  # themselves): the whole suite in one run took 25.8 minutes on a 2-core machine, most of it
  # waiting on virtual boards, brokers and databases; three lanes at once starved the timing
  # tests of the safety loop. Each run lists its slowest tests. The regulator's tests are split
  # between the lanes (its web pages, browser tests among them; the rest) to keep both near
  # the same length.
  lane_a=("tests/tools hil_tests" "tests/regulator/test_web*.py")
  lane_b=("--ignore=tests/regulator --ignore=tests/tools --ignore=hil_tests"
          "tests/regulator --ignore-glob=tests/regulator/test_web*")
  runs=("${lane_a[@]}" "${lane_b[@]}")
  logs=()
  for n in "${!runs[@]}"; do logs+=("$(mktemp)"); done
  lane() {  # the runs numbered $@, one after another; each one's exit code in its log's .rc
    for n in "$@"; do
      # shellcheck disable=SC2086 # a run is a list of arguments
      python -m pytest --durations=15 ${runs[$n]} >"${logs[$n]}" 2>&1
      verdict $? >"${logs[$n]}.rc"
    done
  }
  lane 0 1 &
  a=$!
  lane 2 3 &
  b=$!
  wait "$a" "$b"
  rc=0
  for n in "${!runs[@]}"; do
    code=$(cat "${logs[$n]}.rc" 2>/dev/null || echo 1)
    echo "== pytest ${runs[$n]} (exit $code)"
    cat "${logs[$n]}"
    rm -f "${logs[$n]}" "${logs[$n]}.rc"
    if [ "$rc" = 0 ]; then rc=$code; fi
  done
fi
set -e
exit "$rc"
