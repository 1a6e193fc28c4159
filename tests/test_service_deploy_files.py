"""The deployment files are consistent with the code (no Docker engine here: read them)."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import REPO_ROOT

from gscore.cli import build_parser
from gscore.settings import Settings


def test_compose_services_commands_and_volumes() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "worker", "redis", "postgres"}
    parser = build_parser()
    for name in ("api", "worker"):
        command = services[name]["command"]
        assert command[0] == "gscore"
        parser.parse_args(command[1:])  # the verb and its options exist
        env = services[name]["environment"]
        assert env["BROKER_URL"].startswith("redis://") and env["DATABASE_URL"].startswith("postgresql")
        assert any(volume.startswith("gscore-data:") for volume in services[name]["volumes"])
        assert set(env) <= {field.validation_alias.choices[0] for field in Settings.model_fields.values()}
    assert services["api"]["command"][1:4] == ["serve", "--host", "0.0.0.0"]
    assert services["worker"]["command"][1:4] == ["worker", "--queues", "gpu"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert set(compose["volumes"]) >= {"gscore-data", "redis-data", "postgres-data"}


def test_dockerfile_installs_the_packages_it_runs() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for package in ("gscore", "models", "jobstore", "service", "worker"):
        assert f"COPY {package} ./{package}" in dockerfile
        assert (REPO_ROOT / package / "__init__.py").exists()
    assert 'CMD ["gscore", "serve", "--host", "0.0.0.0"' in dockerfile


def test_docs_list_every_setting() -> None:
    docs = (REPO_ROOT / "docs" / "service.md").read_text()
    for field in Settings.model_fields.values():
        assert field.validation_alias.choices[0] in docs
    assert Path(REPO_ROOT / "docs" / "service.md").exists()
