#!/usr/bin/env bash
# Type-checks the firmware's ESP32 backend and safe core (which cannot run here) against
# micropython-esp32-stubs and MicroPython's stdlib stubs: every machine, network, socket and time
# call it makes must exist, with those arguments, on the ESP32 port.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the device's import layout, gasguard/ with protocol/ inside it and the root's modules beside it, as
# firmware/manifest.py has it
"$repo/.venv/bin/python" - "$work" <<'PY'
import shutil, sys
from pathlib import Path
from gasguard.tools import image
for src, name in image.files():
    if name.startswith("lib/"):
        dst = Path(sys.argv[1]) / name[len("lib/"):]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    elif name.endswith(".py") and "/" not in name:  # the root's modules (fallback: safe's)
        shutil.copy(src, Path(sys.argv[1]) / name)
PY
# only the stub packages' own files: site-packages also holds CPython modules mypy must not see
"$repo/.venv/bin/python" - "$site" "$work/stubs" <<'PY'
import shutil, sys
from importlib.metadata import distribution
from pathlib import Path
site, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("micropython-esp32-stubs", "micropython-stdlib-stubs"):
    for f in distribution(name).files or []:
        if f.suffix == ".pyi" or f.name == "VERSIONS":
            dst = out / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(site / f, dst)
PY
cd "$work"
# report our code only: the stubs have known nits of their own
cat >mypy.ini <<'INI'
[mypy]
[mypy-machine,network,vfs,esp32,socket,time,_mpy_shed.*,stdlib.*,select,gc,micropython]
ignore_errors = True
INI
MYPYPATH="$work/stubs" "$repo/.venv/bin/mypy" --python-version 3.11 --no-site-packages \
  --custom-typeshed-dir "$work/stubs" --follow-imports=silent --check-untyped-defs \
  --config-file mypy.ini --cache-dir "$work/.mypy_cache" gasguard/hal/esp32.py gasguard/safe.py
