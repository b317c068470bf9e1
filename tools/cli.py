"""gasguard: the command line for installers, testers and regulators.

Every command's --help ends with the exit codes (tools/exitcodes.py): 0 ok, 1 check failed,
2 bad usage or bad input, 3 device or service unreachable.

Two conventions every command gets here:
- a usage error (an unknown option, a missing argument) is exit 2 with the usage on stderr; with
  --json on the command line, stdout also holds one JSON object, {"ok": false, "error": ...,
  "exit_code": 2}, so a script reading stdout always gets a document;
- stdout closed early (`gasguard config check site/ | head -1`) ends the command quietly, with
  no traceback and exit 141 (128 + SIGPIPE, as the shell reports a command a pipe stopped).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from gasguard.protocol import PROTOCOL_VERSION, VERSION
from gasguard.tools import exitcodes

# Each module adds its own subcommand (parser and handler) with register(subparsers); this list
# only orders them. Registering imports no simulator, broker or MicroPython VM: they load when
# their command runs.
COMMANDS = (
    "gasguard.tools.bench.command",  # bench
    "gasguard.tools.sim.command",  # vboard
    "gasguard.gateway.__main__",  # gateway: the gateway's own entry
    "gasguard.tools.installer.configcheck",  # config check
    "gasguard.tools.demo",
    "gasguard.tools.installer.flash",
    "gasguard.tools.bench.fuzz",
    "gasguard.tools.installer.commission",
    "gasguard.tools.installer.identity",  # installer keygen
    "gasguard.tools.regulator",
)


BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command a closed pipe stopped


class Parser(argparse.ArgumentParser):
    """Every gasguard parser, subcommands' and theirs in turn (argparse makes nested ones of the
    parent's class): its --help ends with the exit codes, after the command's own epilog; a
    usage error with --json on the command line prints a JSON error object on stdout too."""

    json_wanted = False  # set by main() from the command line, before parsing it

    def __init__(self, *args: Any, epilog: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, epilog=exitcodes.epilog(epilog), **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        print("%s: error: %s" % (self.prog, message), file=sys.stderr)
        if Parser.json_wanted:
            doc = {"ok": False, "error": "%s: %s" % (self.prog, message),
                   "exit_code": exitcodes.BAD_INPUT}  # fmt: skip
            print(json.dumps(doc))
        sys.exit(exitcodes.BAD_INPUT)


def _wants_json(argv: list[str]) -> bool:
    return any(a == "--json" or a.startswith("--json=") for a in argv)


def build_parser() -> Parser:
    parser = Parser(prog="gasguard", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version",
        action="version",
        version="gasguard %s, link protocol v%d" % (VERSION, PROTOCOL_VERSION),
    )
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit (a traceback there)
        return code
    except BrokenPipeError:
        # the reader went away (`| head -1`): nothing more to say to it, and nobody to say it
        # to; stdout points at /dev/null so that Python's own flush at exit finds no pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    Parser.json_wanted = _wants_json(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return exitcodes.BAD_INPUT
    try:
        return args.run(args)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] == "gasguard":
            raise  # our own code is missing: a bug, not an install choice
        # each role installs its own extra (pyproject.toml): this command needs another one
        print(
            "gasguard %s: needs the Python package %r, which this install lacks (install the "
            "extra for this role, e.g. pip install 'gasguard[sim]')" % (args.command, e.name),
            file=sys.stderr,
        )
        return exitcodes.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
