"""Power cuts while the event log is being written: the firmware's EventLog in the MicroPython
unix port is SIGKILLed mid-stream 60 times (and the last segment's tail is torn as a flash write
cut short would leave it); after each cut the chain verifies and nothing that was written before
the record in progress is lost."""

import os
import random
import subprocess
import time
from pathlib import Path

from gasguard.tools import image
from gasguard.tools.sim import micropython

TOOLS = Path(micropython.__file__).parent / "mpy"


def _env(flash: Path) -> dict:
    return dict(os.environ, MICROPYPATH=str(flash / "lib"))


def test_power_cuts_during_log_writes_lose_at_most_the_record_in_progress(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    image.install_firmware(flash)
    root = tmp_path / "data"
    root.mkdir()
    rnd = random.Random(7)
    confirmed = -1  # highest index whose append had returned before the cut
    torn_injected = 0
    for boot in range(1, 61):
        proc = subprocess.Popen(
            [
                micropython.find_micropython(),
                "-X",
                "heapsize=" + micropython.HEAPSIZE,
                str(TOOLS / "log_writer.py"),
                str(root),
                str(boot),
            ],
            cwd=flash,
            env=_env(flash),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first.startswith("OPEN"):
            proc.kill()
            raise AssertionError(first + proc.communicate(timeout=10)[0])
        time.sleep(rnd.uniform(0.01, 0.08))
        proc.kill()  # SIGKILL: the power cut
        out, _ = proc.communicate(timeout=10)
        written = [int(x.split()[1]) for x in out.splitlines() if x.startswith("W ")]
        if written:
            confirmed = max(confirmed, written[-1])
        # half the time, also tear the last record as an interrupted flash write would
        segs = sorted((root / "log").glob("*.seg"))
        if segs and rnd.random() < 0.5 and segs[-1].stat().st_size > 4:
            data = segs[-1].read_bytes()
            cut = rnd.randrange(1, min(len(data), 60))
            segs[-1].write_bytes(data[:-cut])
            torn_injected += 1
            confirmed_floor = confirmed - 1  # the torn one was the record in progress
        else:
            confirmed_floor = confirmed
        r = micropython.check_log(flash, root)
        assert r["chain_ok"], r
        assert r["ids_contiguous"], r
        assert r["next"] - 1 >= confirmed_floor, (boot, r, confirmed)
        confirmed = r["next"] - 1  # what survived is the baseline for the next round
    assert torn_injected >= 20
    assert confirmed > 100  # the cuts happened while plenty was being written
