"""The worker side of superagent: what runs on each machine of the fleet.

`process` runs an agent's process under watchdogs, `prompt` writes what the agent
is asked, `agents` holds the backends (claude-code, codex, gemini, opencode, command,
replay) behind one interface, `logs` keeps and rotates one log per message.
"""
