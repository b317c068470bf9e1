"""`python -m gasguard.gateway --config FILE`: the same as `gasguard gateway --config FILE`."""

import sys

from gasguard.tools.cli import main

sys.exit(main(["gateway", *sys.argv[1:]]))
