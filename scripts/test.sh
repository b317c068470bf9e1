#!/usr/bin/env bash
# The whole test suite: set-up, ruff, mpy-cross over firmware/ and protocol/, the ESP32 HAL type
# check, then one pytest run (CPython tests and the MicroPython-side tests on the real unix port).
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
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
