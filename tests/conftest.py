"""Collects tests/micropython/mp_test_*.py and runs them in the real MicroPython unix port.

Each file runs once in `micropython -X heapsize=110k` with a device-like file tree (lib/gasguard/
protocol and the firmware); every test_* function becomes one pytest item named [micropython].
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest

from gasguard.tools.sim import micropython

_ran: list[str] = []
_cpython_vectors: set[str] = set()


def pytest_collect_file(parent, file_path: Path):
    if file_path.suffix == ".py" and file_path.name.startswith("mp_test_"):
        return MicroPythonFile.from_parent(parent, path=file_path)
    return None


class MicroPythonFile(pytest.File):
    results: dict[str, tuple[bool, str]] | None = None

    def collect(self):
        tree = ast.parse(self.path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(
                    self, name=node.name + "[micropython]", test=node.name
                )

    def run_all(self) -> dict[str, tuple[bool, str]]:
        if self.results is None:
            with tempfile.TemporaryDirectory() as tmp:
                # messages.py is host-only, but its vectors must hold under MicroPython too
                lib = micropython.stage(Path(tmp), protocol_extra=("messages.py",))
                runner = Path(__file__).parent / "micropython" / "runner.py"
                proc = micropython.run(
                    runner,
                    [str(lib), str(self.path.parent), self.path.stem],
                    cwd=Path(tmp),
                    timeout=300,
                )
            out = proc.stdout.decode(errors="replace")
            results: dict[str, tuple[bool, str]] = {}
            for line in out.splitlines():
                if line.startswith("@@MPTEST "):
                    _, name, verdict, *rest = line.split(" ", 3)
                    results[name] = (
                        verdict == "PASS",
                        (rest[0] if rest else "").replace("\\n", "\n"),
                    )
            if "@@MPDONE" not in out:
                err = proc.stderr.decode(errors="replace")
                results["__crash__"] = (
                    False,
                    "micropython exited %d\n%s\n%s" % (proc.returncode, out[-2000:], err[-2000:]),
                )
            self.results = results
        return self.results


class MicroPythonItem(pytest.Item):
    def __init__(self, *, test: str, **kw):
        super().__init__(**kw)
        self.test = test

    def runtest(self):
        results = self.parent.run_all()
        if self.test not in results:
            crash = results.get("__crash__", (False, "no result"))[1]
            raise MicroPythonTestFailure("%s did not report: %s" % (self.test, crash))
        ok, detail = results[self.test]
        if not ok:
            raise MicroPythonTestFailure(detail)
        _ran.append(self.nodeid)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonTestFailure):
            return "MicroPython test failed:\n%s" % excinfo.value
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, self.name


class MicroPythonTestFailure(Exception):
    pass


def pytest_runtest_logreport(report):
    if (
        report.when == "call"
        and report.passed
        and report.nodeid.startswith("tests/test_vectors.py::")
    ):
        _cpython_vectors.add(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    import platform

    if _cpython_vectors:
        terminalreporter.write_line(
            "protocol vectors: %d passed under CPython %s (tests/test_vectors.py)"
            % (len(_cpython_vectors), platform.python_version())
        )
    if _ran:
        vectors = sum(1 for n in _ran if "mp_test_vectors.py" in n)
        terminalreporter.write_line(
            "protocol vectors: %d passed under MicroPython %s unix port, -X heapsize=%s (%s)"
            % (
                vectors,
                micropython.version(),
                micropython.HEAPSIZE,
                micropython.find_micropython(),
            )
        )
        terminalreporter.write_line(
            "MicroPython-side unit tests passed in the real VM: %d" % len(_ran)
        )
