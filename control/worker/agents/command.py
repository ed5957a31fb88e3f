"""The command backend: any other agent CLI (Codex, aider, Gemini CLI, ...) from a template.

The template is an argv list, never a shell string; `{prompt_file}`, `{checkout}` and
`{model}` are replaced inside each element. The prompt goes on stdin (`prompt_via`
"stdin", the default without `{prompt_file}`), in a private file outside the checkout
("file"), or as a JSON object with the prompt and the task's fields on stdin ("json").
Success is exit code 0 and, unless told otherwise (`success`: "exit0"), some output:
an agent that says nothing did nothing worth trusting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from control.errors import SuperagentError, UsageError
from control.process import ProcessOutcome, run_watched
from control.worker.agents.base import (
    RESULT_TEXT_LIMIT,
    AgentRequest,
    AgentResult,
    child_environment,
    excerpt,
    resuming,
    watchdog_result,
)
from control.worker.agents.ratelimit import looks_rate_limited, reset_epoch

NAME = "command"
PLACEHOLDERS = ("{prompt_file}", "{checkout}", "{model}", "{session_id}")
PROMPT_VIA = ("stdin", "file", "json")
SUCCESS_RULES = ("exit0_and_output", "exit0")


def _template(template: Sequence[str]) -> list[str]:
    if not template or not template[0]:
        raise UsageError(
            "the command backend needs `command`: a non-empty JSON list of strings "
            '(an argv template such as ["codex", "exec", "--cd", "{checkout}", "-"])'
        )
    return list(template)


def render(template: Sequence[str], *, prompt_file: Path | None, checkout: Path,
           model: str | None, session_id: str | None = None) -> list[str]:  # fmt: skip
    """The argv from the template: each placeholder replaced inside each element."""
    values = {"{checkout}": str(checkout)}
    if session_id is not None:
        values["{session_id}"] = session_id
    if prompt_file is not None:
        values["{prompt_file}"] = str(prompt_file)
    if model is not None:
        values["{model}"] = model
    argv = []
    for element in template:
        part = element
        for placeholder in PLACEHOLDERS:
            if placeholder in part:
                if placeholder not in values:
                    raise UsageError(
                        f"the command template uses {placeholder} but "
                        + {"{model}": "no model is set",
                           "{session_id}": "there is no session to resume"}.get(
                            placeholder, "the prompt goes on stdin")
                    )  # fmt: skip
                part = part.replace(placeholder, values[placeholder])
        argv.append(part)
    return argv


def task_json(request: AgentRequest, prompt: str) -> dict[str, Any]:
    """What `prompt_via: json` puts on stdin: the prompt and the fields it was built from."""
    return {
        "phase_id": request.phase_id,
        "prompt": prompt,
        "task": request.phase.task,
        "deliverables": list(request.phase.deliverables),
        "verify": list(request.phase.verify),
        "prerequisites": [
            {"phase": p.phase, "branch": p.branch, "commit": p.commit, "summary": p.summary}
            for p in request.phase.prerequisites
        ],
        "model": request.options.model,
    }


class CommandBackend:
    """Runs the agent CLI the spec's template describes; see the module docstring."""

    name = NAME

    def run(self, request: AgentRequest) -> AgentResult:
        options, extra = request.options, request.options.extra
        template = _template(options.command)
        resume = resuming(request) and bool(options.resume_command)
        if resume:
            template = _template(options.resume_command)
        prompt_via = str(extra.get("prompt_via") or (
            "file" if any("{prompt_file}" in part for part in template) else "stdin"
        ))  # fmt: skip
        if prompt_via not in PROMPT_VIA:
            raise UsageError(f"prompt_via must be one of {', '.join(PROMPT_VIA)}")
        success = str(extra.get("success") or "exit0_and_output")
        if success not in SUCCESS_RULES:
            raise UsageError(f"success must be one of {', '.join(SUCCESS_RULES)}")
        try:
            env, secrets = child_environment(request)
        except SuperagentError as exc:
            return AgentResult(status="failed", reason=str(exc), backend=NAME,
                               log_path=request.log_path)  # fmt: skip
        prompt = request.prompt(resuming=resume)
        stdin: bytes | None = None
        if prompt_via == "stdin":
            stdin = prompt.encode("utf-8")
        elif prompt_via == "json":
            stdin = json.dumps(task_json(request, prompt)).encode("utf-8")
        with tempfile.TemporaryDirectory(prefix="superagent-prompt-", dir=request.scratch) as tmp:
            prompt_file = None
            if prompt_via == "file":
                prompt_file = Path(tmp) / "prompt.md"
                fd = os.open(prompt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(prompt)
            argv = render(template, prompt_file=prompt_file, checkout=request.checkout,
                          model=request.options.model,
                          session_id=request.resume_session if resume else None)  # fmt: skip
            program = argv[0]
            if os.sep not in program:
                found = shutil.which(program, path=env.get("PATH"))
                if found is None:
                    return AgentResult(
                        status="failed", backend=NAME, log_path=request.log_path,
                        reason=f"{program!r} not found on the agent's PATH",
                    )  # fmt: skip
                argv[0] = found
            outcome = run_watched(
                argv,
                cwd=request.checkout,
                env=env,
                log_path=request.log_path,
                stdin_data=stdin,
                wall_timeout_s=request.wall_timeout_s,
                silence_timeout_s=request.silence_timeout_s,
                cancel=request.cancel,
                secrets=secrets,
                wrap=request.wrap,
                kill_grace_s=request.kill_grace_s,
                log_header=[
                    f"backend {NAME}, phase {request.phase_id}",
                    f"argv {json.dumps(argv)}",
                    f"cwd {request.checkout}",
                    f"prompt via {prompt_via}" + (", resuming a session" if resume else ""),
                ],
            )
        result = classify(request, outcome, success)
        session = _session_id(options.session_pattern, outcome) or (
            request.resume_session if resume else None
        )
        return replace(result, session_id=session) if session else result


def _session_id(pattern: Any, outcome: ProcessOutcome) -> str | None:
    """The agent's session id, found in its output with the spec's `session_pattern`."""
    if not isinstance(pattern, str) or not pattern:
        return None
    try:
        found = re.search(pattern, outcome.stdout_tail + "\n" + outcome.stderr_tail)
    except re.error:
        return None
    if found is None or not found.groups():
        return None
    return found.group(1)


def classify(request: AgentRequest, outcome: ProcessOutcome, success: str) -> AgentResult:
    """The result of a command run: limits first, then watchdogs, then exit code and output."""
    output = outcome.stdout_tail
    common: dict[str, Any] = {
        "backend": NAME, "log_path": request.log_path, "exit_code": outcome.exit_code,
        "result_text": output[-RESULT_TEXT_LIMIT:] or None,
    }  # fmt: skip
    said = output + "\n" + outcome.stderr_tail
    if outcome.exit_code != 0 and not outcome.cancelled and looks_rate_limited(said):
        return AgentResult(
            status="rate_limited", reason="usage limit reached: " + excerpt(said, 200),
            rate_limit_reset=reset_epoch(said), **common,
        )  # fmt: skip
    if (ended := watchdog_result(NAME, request, outcome,
                                 result_text=common["result_text"])) is not None:  # fmt: skip
        return ended
    if outcome.exit_code != 0:
        detail = excerpt(outcome.stderr_tail or output)
        return AgentResult(
            status="failed",
            reason=f"the agent exited {outcome.exit_code}" + (f": {detail}" if detail else ""),
            **common,
        )
    if success == "exit0_and_output" and not output.strip():
        return AgentResult(
            status="failed", reason="the agent exited 0 but printed nothing", **common
        )
    return AgentResult(status="ok", reason="the agent exited 0", **common)
