"""firmware/manifest.py declares the device image: every module the firmware imports at run time
is in it, and nothing host-only is (messages, cloudevents, schemas stay off the board)."""

import ast
from pathlib import Path

from gasguard.tools import image

ROOT = Path(__file__).parents[1]
FIRMWARE = ROOT / "firmware"
PROTOCOL = ROOT / "protocol"


def _file_of(module: str) -> Path | None:
    """The source file a dotted module name is on the board, or None if it is not ours."""
    parts = module.split(".")
    if parts[:2] == ["gasguard", "protocol"]:
        base = PROTOCOL.joinpath(*parts[2:])
    elif parts[0] == "gasguard":
        base = FIRMWARE.joinpath("lib", *parts)
    elif len(parts) == 1 and (FIRMWARE / (module + ".py")).is_file():
        return FIRMWARE / (module + ".py")  # rom.py, at the board's root
    else:
        return None  # MicroPython's own (machine, micropython, os, ...)
    if base.is_dir():
        return base / "__init__.py"
    return base.with_suffix(".py")


def _dotted(path: Path) -> str:
    if path.is_relative_to(PROTOCOL):
        parts = ["gasguard", "protocol", *path.relative_to(PROTOCOL).with_suffix("").parts]
    elif path.is_relative_to(FIRMWARE / "lib"):
        parts = list(path.relative_to(FIRMWARE / "lib").with_suffix("").parts)
    else:
        parts = [path.stem]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[Path]:
    """Our files that `path` imports, anywhere in it (imports inside functions run too)."""
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [base] + [base + "." + a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b too
                f = _file_of(".".join(parts[:i]))
                if f is not None and f.is_file():
                    found.add(f.resolve())
    return found


def _reachable() -> set[Path]:
    """Every file reachable by imports from the board's root files and the firmware package."""
    todo = [FIRMWARE / n for n in ("boot.py", "main.py")]
    todo += list((FIRMWARE / "lib" / "gasguard").rglob("*.py"))  # selftest, release: by name
    seen: set[Path] = set()
    while todo:
        f = todo.pop().resolve()
        if f not in seen:
            seen.add(f)
            todo.extend(_imports(f))
    return seen


def _in_image() -> set[Path]:
    return {src.resolve() for src, _ in image.files() if src.suffix == ".py"}


def test_every_module_the_firmware_imports_is_in_the_image():
    missing = _reachable() - _in_image()
    assert not missing, sorted(str(p.relative_to(ROOT)) for p in missing)


def test_nothing_host_only_is_in_the_image():
    extra = _in_image() - _reachable()
    assert not extra, sorted(str(p.relative_to(ROOT)) for p in extra)
    names = {name for _, name in image.files()}
    for host_only in ("messages.py", "cloudevents.py"):
        assert "lib/gasguard/protocol/" + host_only not in names
    assert not any("schemas" in n for n in names)


def test_every_file_the_manifest_names_exists_and_the_profiles_go_on():
    listed = image.files()
    assert all(src.is_file() for src, _ in listed), [s for s, _ in listed if not s.is_file()]
    profiles = [n for _, n in listed if n.endswith(".json")]
    assert len(profiles) == len(list((PROTOCOL / "profiles").glob("*.json"))) > 0
