"""The shared protocol vectors under CPython (the same file runs under MicroPython too)."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "mp_test_vectors", Path(__file__).parent / "micropython" / "mp_test_vectors.py"
)
assert _spec and _spec.loader
shared = importlib.util.module_from_spec(_spec)
sys.modules["mp_test_vectors"] = shared
_spec.loader.exec_module(shared)

globals().update({n: getattr(shared, n) for n in dir(shared) if n.startswith("test_")})
