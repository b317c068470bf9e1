import sys

from gasguard.regulator.command import main

sys.exit(main())
