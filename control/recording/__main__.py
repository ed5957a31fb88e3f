"""`python -m control.recording`."""

import sys

from control.recording.command import main

sys.exit(main())
