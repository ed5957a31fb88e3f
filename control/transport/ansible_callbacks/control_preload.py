"""A callback plugin that loads, in the controller, the plugins every host's fork loads again.

Ansible forks one process per host for a task; each fork loads its connection and
shell plugins and parses their YAML documentation (where their options are
defined) afresh: profiled on a 50-host fan-out, half of the Python calls each fork
made. Loaded once in the controller before the forks (at the play's start), they
are inherited instead. So are Jinja's lexer and the regular expressions the module
builder uses, which each fork compiled again (Ansible's own notes say the lexer
should be made before forking), and the three modules each fork still imported
(listed from `sys.modules` before and after a fork's task): the `normal` action
plugin that runs a module, and the JSON profiles a module's arguments are encoded
and its result decoded with.
Only a speed-up: should Ansible's loader API change, it does nothing.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import action_loader, connection_loader, shell_loader

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
ACTIONS = ("ansible.legacy.normal",)  # what runs a module that has no action of its own
PROFILE = "legacy"  # the JSON profile of a module without Ansible's metadata, as ours
# The regular expressions each fork compiled for itself (Python's `re` caches them per
# process): the ones Ansible's module builder searches a module's source with to tell
# its style (ansible.executor.module_common), ahead of the "JSON args" marker.
MODULE_STYLE_PATTERNS = (
    (b"#Requires -Module", re.IGNORECASE),
    (b"#Requires -Version", re.IGNORECASE),
    (b"#AnsibleRequires -(OSVersion|PowerShell|CSharpUtil|Wrapper)", re.IGNORECASE),
)


class CallbackModule(CallbackBase):  # type: ignore[misc]  # Ansible is untyped
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "control_preload"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play: Any) -> None:
        try:
            # ansible-core 2.19's: with an older one (pyproject allows 2.17) the import
            # fails here and the plugin does nothing, as when Ansible's loader API changes.
            from ansible.module_utils.common.json import (  # noqa: PLC0415
                Direction,
                get_module_decoder,
                get_module_encoder,
            )
            from ansible.template import Templar, trust_as_template  # noqa: PLC0415

            for name in CONNECTIONS:
                connection_loader.get(name, class_only=True)
            for name in SHELLS:
                shell_loader.get(name, class_only=True)
            for name in ACTIONS:
                action_loader.get(name, class_only=True)
            get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
            get_module_decoder(PROFILE, Direction.MODULE_TO_CONTROLLER)
            # Jinja's lexer (a dozen regular expressions), cached per process once a
            # template is compiled: each fork compiles the module's arguments.
            Templar(loader=None).template(trust_as_template("{{ 0 }}"))
            for pattern, flags in MODULE_STYLE_PATTERNS:
                re.compile(pattern, flags)
        except Exception as exc:  # a speed-up must never fail a call
            self._display.vvvv(f"control_preload: {exc}")
