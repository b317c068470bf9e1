"""`gasguard` command line entry point."""

import argparse
import sys

from gasguard.protocol import PROTOCOL_VERSION


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gasguard", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    args = parser.parse_args(argv)
    if args.version:
        print("gasguard 0.1.0, link protocol v%d" % PROTOCOL_VERSION)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
