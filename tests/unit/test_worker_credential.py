"""The worker's credential as systemd hands it over: `credential = NAME` in worker.toml is
read from $CREDENTIALS_DIRECTORY (LoadCredential=), which only the unit's processes get."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.errors import UsageError
from control.worker.config import load_config
from control.worker.secrets import known_secrets
from tests.fakes.agents import credential_file


def _toml(tmp_path: Path, credential: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        f'worker_id = "w1"\nqueue_db = "{tmp_path}/q.db"\nwork_dir = "{tmp_path}/work"\n'
        f'logs_dir = "{tmp_path}/logs"\ncredential = "{credential}"\n'
    )
    return path


def test_the_credential_is_read_where_systemd_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "credentials"
    directory.mkdir()
    loaded = credential_file(directory, "ANTHROPIC_API_KEY=sk-ant-api03-from-systemd-0001\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    config = load_config(_toml(tmp_path, loaded.name))
    assert config.credential_file == loaded
    assert known_secrets(config) == ["sk-ant-api03-from-systemd-0001"]


def test_outside_its_unit_the_worker_has_no_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = load_config(_toml(tmp_path, "agent-credentials"))
    assert config.credential_file is None
    assert known_secrets(config) == []


@pytest.mark.parametrize("name", ["../etc/shadow", "a/b", ".hidden", ""])
def test_a_credential_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match=r"worker\.toml: credential must be a systemd"):
        load_config(_toml(tmp_path, name))
