"""The settings object: defaults with nothing set, and unusable values refused with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from gscore.cli.main import main
from gscore.errors import ConfigurationError
from gscore.settings import get_settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GSCORE_DATA_DIR",
        "DATABASE_URL",
        "BROKER_URL",
        "GSCORE_LEASE_SECONDS",
        "GSCORE_DEVICE",
        "GSCORE_JOB_SOFT_TIME_LIMIT",
        "GSCORE_JOB_TIME_LIMIT",
        "GSCORE_DEFAULT_QUEUE",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_need_nothing_set():
    settings = load_settings()
    assert settings.data_dir == Path("gscore-data")
    assert settings.resolved_database_url == f"sqlite:///{Path('gscore-data/gscore.db').resolve()}"
    assert settings.resolved_broker_url.startswith("sqla+sqlite:///") and settings.default_queue == "cpu"
    assert settings.job_soft_time_limit < settings.job_time_limit


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("GSCORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BROKER_URL", "redis://example:6379/0")
    settings = load_settings()
    assert settings.resolved_storage_dir == tmp_path / "storage"
    assert settings.resolved_broker_url == "redis://example:6379/0"


@pytest.mark.parametrize(
    ("environment", "needles"),
    [
        ({"GSCORE_LEASE_SECONDS": "abc"}, ["GSCORE_LEASE_SECONDS='abc'", "integer"]),
        ({"GSCORE_LEASE_SECONDS": "0"}, ["GSCORE_LEASE_SECONDS must be positive"]),
        (
            {"GSCORE_JOB_SOFT_TIME_LIMIT": "100", "GSCORE_JOB_TIME_LIMIT": "50"},
            ["GSCORE_JOB_SOFT_TIME_LIMIT (100) must be below GSCORE_JOB_TIME_LIMIT (50)"],
        ),
        ({"GSCORE_DEFAULT_QUEUE": "fast"}, ["GSCORE_DEFAULT_QUEUE must be cpu or gpu"]),
        ({"GSCORE_DEVICE": "tpu"}, ["GSCORE_DEVICE must be auto, cpu or cuda"]),
    ],
)
def test_unusable_values_name_the_variable(monkeypatch, capsys, environment, needles):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert all(needle in info.value.detail for needle in needles), info.value.detail
    assert main(["serve", "--port", "1"]) == 2  # the CLI says so instead of a traceback
    err = capsys.readouterr().err
    assert "Invalid configuration" in err and needles[0] in err and "Traceback" not in err
