"""A rollout stopped by a failed playbook says what failed, not the play recap's numbers."""

from __future__ import annotations

from control.upgrade import _why

OUTPUT = """
TASK [claude_code : Check that npm installed exactly the pin] ******************
fatal: [host1]: FAILED! => {"assertion": false, "changed": false,
    "msg": "npm installed 9.9.1, pinned 9.9.2"}

PLAY RECAP *********************************************************************
host1                      : ok=40   changed=3    unreachable=0    failed=1    skipped=9
""" + "\n".join(f"[WARNING]: filler line {n}" for n in range(50))


def test_the_reason_is_the_failed_tasks_message() -> None:
    why = _why(OUTPUT)
    assert why.startswith("fatal: [host1]: FAILED!")
    assert "npm installed 9.9.1, pinned 9.9.2" in why


def test_without_a_failure_line_the_last_words_are_kept() -> None:
    assert _why("one two\nthree") == "one two three"
