"""The device as host tools see it: its config and key files, and firmware modules loaded under
CPython so the host applies the firmware's own rules (config check, flash, fuzzing, property
tests). Shared by the installer and the simulator, so neither imports the other."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gasguard.tools.image import firmware_dir


class ConfigFileError(ValueError):
    pass


def read_device_config(path: Path, key_path: Path | None = None) -> tuple[dict, bytes]:
    """The device config and its key (from --key, else the config's key_hex)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigFileError("%s: cannot read (%s)" % (path, e.strerror)) from None
    except ValueError as e:
        raise ConfigFileError("%s: not valid JSON (%s)" % (path, e)) from None
    if not isinstance(cfg, dict):
        raise ConfigFileError("%s: the top level must be an object" % path)
    if key_path is not None:
        text = Path(key_path).read_text().strip()
    else:
        text = cfg.get("key_hex", "")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigFileError("key: not hexadecimal") from None
    if len(key) < 16:
        raise ConfigFileError("key: missing or shorter than 16 bytes (use --key or key_hex)")
    return cfg, key


def load_firmware_module(name: str):
    """A firmware module (firmware/lib/gasguard/NAME.py) imported into CPython, for the host
    tools that apply its rules (config check, flash) and for fuzzing and property tests:
    MicroPython's const() and time's ticks and sleeps are supplied.
    Loaded once per process."""
    import importlib.util
    import time as _time
    import types

    key = "gasguard_fw_" + name
    if key in sys.modules:
        return sys.modules[key]
    if not hasattr(sys.modules.get("micropython"), "const"):  # absent, or a stray namespace
        mp = types.ModuleType("micropython")
        mp.const = lambda x: x  # type: ignore[attr-defined]
        sys.modules["micropython"] = mp
    if not hasattr(_time, "ticks_diff"):
        _time.ticks_diff = lambda a, b: a - b  # type: ignore[attr-defined]
        _time.ticks_add = lambda a, b: a + b  # type: ignore[attr-defined]
        _time.sleep_us = lambda us: _time.sleep(us / 1e6)  # type: ignore[attr-defined]
        _time.sleep_ms = lambda ms: _time.sleep(ms / 1e3)  # type: ignore[attr-defined]
        _time.ticks_ms = lambda: int(_time.monotonic() * 1000)  # type: ignore[attr-defined]
    path = firmware_dir() / "lib" / "gasguard" / (name + ".py")
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod  # found again by name (and by the fuzzer's instrumentation)
    spec.loader.exec_module(mod)
    return mod
