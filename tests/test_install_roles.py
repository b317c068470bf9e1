"""Each role installs only what it needs: `pip install "gasguard[gateway]"` in a fresh virtual
environment gives a working `gasguard gateway --help`, and no MQTT broker (amqtt), Modbus
simulator (pymodbus) or MicroPython VM comes with it. Slow (~1 min: a real pip install from the
package registry pip is configured with), but part of the normal suite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.install


def _copy_tracked(dest: Path) -> None:
    # a copy of what git tracks: building in the worktree would leave build/ and egg-info behind
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, names):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.relative_to(ROOT))


def test_the_gateway_extra_runs_the_gateway_and_brings_no_simulator(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to copy the package from")
    src = tmp_path / "src"
    _copy_tracked(src)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "%s[gateway]" % src],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]

    out = subprocess.run(
        [str(bin_ / "gasguard"), "gateway", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "usage: gasguard gateway" in out.stdout and "--config" in out.stdout
    # the gateway itself loads (its runtime came with the extra), not just its help
    probe = "import gasguard.gateway.service"
    run = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for absent in ("amqtt", "pymodbus"):
        r = subprocess.run([str(py), "-c", "import " + absent], capture_output=True, timeout=60)
        assert r.returncode != 0, absent + " came with gasguard[gateway]"
    assert not (bin_ / "micropython").exists()
