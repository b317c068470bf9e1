#!/usr/bin/env bash
# The whole test suite: set-up, ruff, mpy-cross over firmware/ and protocol/, the ESP32 HAL type
# check, then pytest (CPython tests and the MicroPython-side tests on the real unix port): the
# regulator's tests in a run of their own beside the rest.
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
  # Two runs side by side: the regulator's tests (mostly waiting on PostgreSQL, mosquitto and
  # ingest processes, each on ports and lock files of its own) beside everything else; the
  # whole suite in one run took over 25 minutes on a 2-core machine
  reglog=$(mktemp)
  python -m pytest tests/regulator >"$reglog" 2>&1 &
  regpid=$!
  python -m pytest --ignore=tests/regulator
  rest=$(verdict $?)
  wait "$regpid"
  reg=$(verdict $?)
  echo "== pytest tests/regulator (run beside the above)"
  cat "$reglog"
  rm -f "$reglog"
  rc=$(( rest != 0 ? rest : reg ))
fi
set -e
exit "$rc"
