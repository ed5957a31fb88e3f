"""A worker finds the credential of the account a task names, and masks every account's values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from control.errors import UsageError
from control.worker.config import WorkerConfig, default_config
from control.worker.secrets import account_credential, known_secrets


def config_with_accounts(tmp_path: Path) -> WorkerConfig:
    accounts = tmp_path / "accounts"
    accounts.mkdir(mode=0o700)
    for name, value in (("team", "sk-ant-team-secret-value"), ("codex-main", "sk-codex-value-123")):
        path = accounts / f"{name}.env"
        path.write_text(f"KEY={value}\n")
        path.chmod(0o600)
    return replace(default_config(tmp_path / "home", "w1"), accounts_dir=accounts)


def test_the_tasks_account_names_its_credential_file(tmp_path: Path) -> None:
    config = config_with_accounts(tmp_path)
    assert account_credential(config, "team") == tmp_path / "accounts" / "team.env"
    assert account_credential(config, None) is None


@pytest.mark.parametrize(
    ("account", "message"),
    [
        ("other", "worker w1 holds no credential for account 'other'"),
        ("../team", "the task names no valid account: '../team'"),
        ("Team", "the task names no valid account"),
        (7, "the task names no valid account"),
    ],
)
def test_an_account_this_worker_does_not_hold_is_refused(
    tmp_path: Path, account: object, message: str
) -> None:
    config = config_with_accounts(tmp_path)
    with pytest.raises(UsageError, match=message):
        account_credential(config, account)


def test_a_worker_without_accounts_dir_says_so(tmp_path: Path) -> None:
    config = default_config(tmp_path, "w1")
    with pytest.raises(UsageError, match="worker w1 has no accounts_dir"):
        account_credential(config, "team")


def test_every_accounts_values_are_known_secrets(tmp_path: Path) -> None:
    config = config_with_accounts(tmp_path)
    assert sorted(known_secrets(config)) == ["sk-ant-team-secret-value", "sk-codex-value-123"]
