"""A callback plugin that loads, in the controller, the plugins every host's fork loads again.

Ansible forks one process per host for a task; each fork loads its connection and
shell plugins and parses their YAML documentation (where their options are
defined) afresh: profiled on a 50-host fan-out, half of the Python calls each fork
made. Loaded once in the controller before the forks (at the play's start), they
are inherited instead.
Only a speed-up: should Ansible's loader API change, it does nothing.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import connection_loader, shell_loader

DOCUMENTATION = """
name: control_preload
type: aggregate
short_description: load the connection and shell plugins once, before the forks
description:
  - Loads the ssh and local connection plugins and the sh shell plugin in the controller
    at the start of a play, so that each host's fork inherits them.
"""

CONNECTIONS = ("ssh", "local")
SHELLS = ("sh",)


class CallbackModule(CallbackBase):  # type: ignore[misc]  # Ansible is untyped
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "control_preload"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play: Any) -> None:
        try:
            for name in CONNECTIONS:
                connection_loader.get(name, class_only=True)
            for name in SHELLS:
                shell_loader.get(name, class_only=True)
        except Exception as exc:  # a speed-up must never fail a call
            self._display.vvvv(f"control_preload: {exc}")
