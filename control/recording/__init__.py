"""A replay example from a real project's history: each upstream commit becomes one phase.

`python -m control.recording CLONE BASE LAST --name NAME` reads a local clone (nothing is
fetched) and writes, under specs/examples/: the spec NAME.json (one phase per first-parent
commit after BASE up to LAST; `depends_on` the earlier phases that touched the same files;
`verify` the upstream tests of the modules it touched), the recordings replay/NAME/<phase>/
(the upstream patch, byte for byte), the seed seed/NAME.tar.xz (upstream's tree at BASE) and
upstream/NAME/ (the upstream LICENSE, an attribution README and upstream.json, which names the
tree every run must end on). Before anything is written, the recording is replayed here as the
workers would: each phase on its branch with its prerequisites merged, its files checked against
upstream's and its verify run; then everything merged, the tree checked against upstream's at
LAST and the whole upstream suite run on it. A recording that fails any of that is not written.

The parts: `history` reads the clone into a `Recording` (`phases` names each phase and
picks its tests), `replay` checks it as the workers will run it, `example` writes it out,
`command` is the script.
"""

from control.recording.command import main
from control.recording.example import spec_of
from control.recording.history import record
from control.recording.model import TEST_PREFIX, RecordingError
from control.recording.phases import phase_id
from control.recording.replay import check, passed_count, run_check

__all__ = [
    "TEST_PREFIX",
    "RecordingError",
    "check",
    "main",
    "passed_count",
    "phase_id",
    "record",
    "run_check",
    "spec_of",
]
