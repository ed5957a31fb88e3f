"""The state store: every part of the state database behind one object.

Each part is a class of its own module over the same connection (`base.StoreBase`);
callers see one `StateStore`, as the orchestrator holds one per process.
"""

from __future__ import annotations

from control.state.costs import Costs
from control.state.driver import Driver
from control.state.fleet import Fleet
from control.state.freeform import Freeform
from control.state.holds import Holds
from control.state.integrations import Integrations
from control.state.interventions import Interventions
from control.state.reopens import Reopens
from control.state.retention import Retention


class StateStore(
    Interventions, Costs, Driver, Holds, Fleet, Freeform, Integrations, Reopens, Retention
):
    """All reads and writes of the state database; one per orchestrator process."""
