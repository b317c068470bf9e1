"""gasguard: the command line for installers, testers and regulators.

Every command's --help ends with the exit codes (tools/exitcodes.py): 0 ok, 1 check failed,
2 bad usage or bad input, 3 device or service unreachable.
"""

from __future__ import annotations

import argparse
import importlib
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
    "gasguard.tools.regulator",
)


class Parser(argparse.ArgumentParser):
    """Every gasguard parser, subcommands' and theirs in turn (argparse makes nested ones of the
    parent's class): its --help ends with the exit codes, after the command's own epilog."""

    def __init__(self, *args: Any, epilog: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, epilog=exitcodes.epilog(epilog), **kwargs)


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
