"""The payloads that travel through a worker's inbox: the contract between the
orchestrator (which writes a `PhaseTask` or an `IntegrationTask`) and the worker
(which answers with a phase response or an `IntegrationResult`). Both sides
validate with this module, so a field is named once.
"""

from control.messages.agent import AGENT_BACKENDS, DEFAULT_BACKEND, PERMISSION_MODES, AgentOptions
from control.messages.feedback import Feedback
from control.messages.fields import PAYLOAD_VERSION, to_b64
from control.messages.integration import (
    CheckResult,
    IntegrationCheck,
    IntegrationPhase,
    IntegrationResult,
    IntegrationTask,
)
from control.messages.kinds import (
    FreeformTask,
    is_freeform_payload,
    is_integration_payload,
    is_phase_payload,
)
from control.messages.phase import PhaseTask, PrerequisiteRef
from control.messages.refs import (
    INTEGRATION_KEY_PREFIX,
    WIP_REF_PREFIX,
    attempt_ref,
    integration_key,
    integration_ref,
    wip_ref,
)
from control.messages.response import PhaseResponse
from control.messages.verify import VerifyResult

__all__ = [
    "AGENT_BACKENDS",
    "DEFAULT_BACKEND",
    "INTEGRATION_KEY_PREFIX",
    "PAYLOAD_VERSION",
    "PERMISSION_MODES",
    "WIP_REF_PREFIX",
    "AgentOptions",
    "CheckResult",
    "Feedback",
    "FreeformTask",
    "IntegrationCheck",
    "IntegrationPhase",
    "IntegrationResult",
    "IntegrationTask",
    "PhaseResponse",
    "PhaseTask",
    "PrerequisiteRef",
    "VerifyResult",
    "attempt_ref",
    "integration_key",
    "integration_ref",
    "is_freeform_payload",
    "is_integration_payload",
    "is_phase_payload",
    "to_b64",
    "wip_ref",
]
