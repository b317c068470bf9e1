# Runs the test_* functions of one module under the MicroPython unix port and prints one result
# line each for the pytest plugin in tests/conftest.py to read.
# usage: micropython runner.py LIB_DIR TEST_DIR MODULE [TEST ...]
import io
import sys

lib, tests, name = sys.argv[1], sys.argv[2], sys.argv[3]
wanted = sys.argv[4:]
sys.path.insert(0, tests)
sys.path.insert(0, lib)
mod = __import__(name)
names = wanted or sorted(n for n in dir(mod) if n.startswith("test_"))
for n in names:
    try:
        getattr(mod, n)()
        print("@@MPTEST", n, "PASS")
    except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
        buf = io.StringIO()
        sys.print_exception(e, buf)
        print("@@MPTEST", n, "FAIL", buf.getvalue().replace("\n", "\\n"))
print("@@MPDONE")
