"""`python -m tests.fleet.harness`: the fleet's command line."""

import sys

from tests.fleet.harness.cli import main

sys.exit(main())
