"""control_preload, the callback plugin that loads in Ansible's controller the plugins each
host's fork would load again: what it loads, and that it can never fail a call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from control.transport.runner import CALLBACKS, AdHocRunner


def test_every_call_enables_it_beside_the_callbacks_asked_for() -> None:
    env = AdHocRunner(envvars={}).envvars()
    assert env["ANSIBLE_CALLBACK_PLUGINS"].split(":")[0] == str(CALLBACKS)
    assert env["ANSIBLE_CALLBACKS_ENABLED"].split(",")[0] == "control_preload"


def _in_a_fresh_ansible(body: str) -> str:
    """`body` run in a new Python with the plugin loaded as Ansible loads it."""
    script = textwrap.dedent(
        f"""
        import sys
        from ansible.plugins.loader import init_plugin_loader, callback_loader
        from ansible.plugins.loader import connection_loader, shell_loader
        from ansible import constants as C
        init_plugin_loader()
        callback_loader.add_directory({str(CALLBACKS)!r})
        plugin = callback_loader.get("control_preload")
        """
    ) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    return done.stdout.strip()


def test_at_the_play_start_the_connection_and_shell_plugins_are_loaded() -> None:
    out = _in_a_fresh_ansible(
        """
        def loaded():
            return [C.config.has_configuration_definition(kind, name)
                    for kind, name in (("connection", "ssh"), ("connection", "local"),
                                       ("shell", "sh"))]
        before = loaded()
        plugin.v2_playbook_on_play_start(None)
        print(before, loaded())
        """
    )
    assert out == "[False, False, False] [True, True, True]"


def test_a_loader_that_fails_does_not_fail_the_play() -> None:
    out = _in_a_fresh_ansible(
        """
        def broken(*args, **kwargs):
            raise RuntimeError("moved")
        connection_loader.get = broken
        plugin.v2_playbook_on_play_start(None)
        print("went on")
        """
    )
    assert out == "went on"


def test_at_the_play_start_the_lexer_and_module_builder_expressions_are_made() -> None:
    """What each fork would otherwise compile: Jinja's lexer for the module's arguments,
    and the expressions Ansible's module builder tells a module's style with."""
    out = _in_a_fresh_ansible(
        """
        import re
        from ansible._internal._templating._jinja_bits import AnsibleEnvironment
        from ansible.executor import module_common

        def made():
            before = re._cache.copy() if hasattr(re, "_cache") else {}
            module_common._find_module_utils(
                module_name="m", b_module_data=b"#!/usr/bin/python\\n", module_path="/m.py",
                module_args={}, task_vars={}, templar=None, module_compression="ZIP_STORED",
                async_timeout=0, become_plugin=None, environment={})
            return len(AnsibleEnvironment._lexer_cache), len(re._cache) == len(before)

        lexers = len(AnsibleEnvironment._lexer_cache)
        plugin.v2_playbook_on_play_start(None)
        print(lexers, *made())
        """
    )
    assert out == "0 1 True"


def test_at_the_play_start_the_modules_each_fork_imported_are_imported() -> None:
    """The three a fork still imported for a module's task (seen in `sys.modules` before
    and after a fork's run): the action that runs a module, and the JSON profiles its
    arguments and its result go through."""
    out = _in_a_fresh_ansible(
        """
        names = ("ansible.plugins.action.normal",
                 "ansible.module_utils._internal._json._profiles._module_legacy_c2m",
                 "ansible.module_utils._internal._json._profiles._module_legacy_m2c")
        before = [n in sys.modules for n in names]
        plugin.v2_playbook_on_play_start(None)
        print(before, [n in sys.modules for n in names])
        """
    )
    assert out == "[False, False, False] [True, True, True]"
