"""The deployment files are consistent with the code (no Docker engine here: read them)."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import REPO_ROOT

from gscore.cli.main import build_parser
from gscore.settings import Settings, env_name


def _env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_services_commands_and_volumes() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "worker", "redis", "postgres"}
    parser = build_parser()
    for name in ("api", "worker"):
        command = services[name]["command"]
        assert command[0] == "gscore"
        parser.parse_args(command[1:])  # the verb and its options exist
        assert services[name]["env_file"] == ".env"  # DATABASE_URL with its password
        env = {**_env_file(REPO_ROOT / ".env.example"), **services[name]["environment"]}
        assert env["BROKER_URL"].startswith("redis://") and env["DATABASE_URL"].startswith("postgresql")
        assert any(volume.startswith("gscore-data:") for volume in services[name]["volumes"])
        settings_names = {env_name(name) for name in Settings.model_fields}
        assert set(env) - {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= settings_names
    assert services["api"]["command"][1:4] == ["serve", "--host", "0.0.0.0"]
    assert services["worker"]["command"][1:4] == ["worker", "--queues", "gpu"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert set(compose["volumes"]) >= {"gscore-data", "redis-data", "postgres-data"}


def test_dockerfile_installs_the_packages_it_runs() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for package in ("gscore",):
        assert f"COPY {package} ./{package}" in dockerfile
        assert (REPO_ROOT / package / "__init__.py").exists()
    assert 'CMD ["gscore", "serve", "--host", "0.0.0.0"' in dockerfile


def test_docs_list_every_setting() -> None:
    docs = (REPO_ROOT / "docs" / "service.md").read_text()
    for name in Settings.model_fields:
        assert env_name(name) in docs, name
    assert Path(REPO_ROOT / "docs" / "service.md").exists()


def test_passwords_come_from_the_env_file() -> None:
    compose_text = (REPO_ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(compose_text)
    example = _env_file(REPO_ROOT / ".env.example")
    postgres = compose["services"]["postgres"]
    assert postgres["env_file"] == ".env" and "environment" not in postgres
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(example)
    assert f":{example['POSTGRES_PASSWORD']}@" in example["DATABASE_URL"]  # one password, two places
    assert (
        "POSTGRES_PASSWORD:" not in compose_text and "gscore:gscore@" not in compose_text
    )  # no inline password
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def test_worker_health_check_is_its_own() -> None:
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    test = services["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:4] == ["gscore", "worker", "--check"]
    assert not any("8000" in part or "healthz" in part for part in test)  # not the API's URL
    args = build_parser().parse_args(test[2:])
    assert args.check and args.check_timeout < int(services["worker"]["healthcheck"]["timeout"].rstrip("s"))


def test_deployment_docs_state_datasets_driver_and_keys() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Deployment") :]
    for needed in (
        "gscore-datasets",
        "GSCORE_DATASETS_DIR",
        "cifar",
        ".env.example",
        "580",
        "gscore keys create",
    ):
        assert needed.lower() in section.lower(), needed
    assert "580" in (REPO_ROOT / "Dockerfile").read_text()


def test_the_installed_package_ships_the_dashboard_and_the_migrations(tmp_path: Path) -> None:
    """`pip install .` (the Dockerfile's install) must carry the non-Python files the service opens. The
    wheel is built from a clean copy of the sources (a `build/` folder left by an earlier build would
    carry the files whatever the package data says)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("gscore",):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("gscore-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    needed = [
        path.relative_to(REPO_ROOT).as_posix()
        for folder in ("gscore/service/dashboard", "gscore/jobstore/migrations")
        for path in (REPO_ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert needed and not [name for name in needed if name not in shipped]
