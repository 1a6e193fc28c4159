"""The package layering, read from the source (ast, function-local imports included): the job store imports
neither the HTTP layer nor the workers, the workers do not import the HTTP layer, and the engine imports
none of the three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SERVICE_PACKAGES = ("gscore.service", "gscore.worker", "gscore.jobstore")
ENGINE_MODULES = (
    "gscore.measures.clustering",
    "gscore.ranking.kendall",
    "gscore.inputs.extraction",
    "gscore.measures.sharpness",
    "gscore.measures.intrinsic_dimension",
    "gscore.measures.tangent_alignment",
    "gscore.measures.table",
    "gscore.measures.types",
    "gscore.measures.context",
    "gscore.pipeline",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str | None = None) -> set[str]:
    """Every module named by an ``import``/``from ... import`` anywhere in the file (``module``, by default
    named from its path), relative ones resolved."""
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, node.module] if node.module else base)
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def package_imports(package: str) -> dict[str, set[str]]:
    """Module name -> the modules it imports, for every .py file of ``package``."""
    return {module_name(path): imported_modules(path) for path in sorted((REPO_ROOT / package).rglob("*.py"))}


def offending(imports: dict[str, set[str]], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Module -> the imported names that are, or lie under, one of the ``forbidden`` packages."""
    bad = {
        module: sorted(
            name for name in names if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        for module, names in imports.items()
    }
    return {module: names for module, names in bad.items() if names}


def test_the_parser_sees_top_level_local_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "import os.path\nfrom gscore.service import deps\n\n\ndef f():\n    from gscore.worker.tasks import x\n"
        "    from .routes import jobs\n    from . import app\n"
    )
    assert imported_modules(source, "gscore.service.probe") == {
        "os.path",
        "gscore.service",
        "gscore.service.deps",
        "gscore.worker.tasks",
        "gscore.worker.tasks.x",
        "gscore.service.routes",
        "gscore.service.routes.jobs",
        "gscore.service.app",
    }


def test_jobstore_imports_neither_service_nor_worker() -> None:
    imports = package_imports("gscore/jobstore")
    expected = {
        "gscore.jobstore.db",
        "gscore.jobstore.jobs_repo",
        "gscore.jobstore.dedupe",
        "gscore.jobstore.dispatch",
    }
    assert expected <= set(imports)
    assert offending(imports, ("gscore.service", "gscore.worker")) == {}


def test_worker_does_not_import_service() -> None:
    imports = package_imports("gscore/worker")
    assert (
        "gscore.jobstore.dedupe" in imports["gscore.worker.execute"]
    )  # the same duplicate check as the API's
    assert offending(imports, ("gscore.service",)) == {}


def test_service_publishes_through_jobstore_not_worker() -> None:
    assert offending(package_imports("gscore/service"), ("gscore.worker",)) == {}


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_the_engine_imports_none_of_the_service_packages(module: str) -> None:
    path = REPO_ROOT / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        pytest.skip(f"{module} is not part of this tree yet")
    imports = {module: imported_modules(path)}
    assert offending(imports, SERVICE_PACKAGES) == {}


ENGINE_PACKAGES = ("gscore/measures", "gscore/ranking", "gscore/inputs", "gscore/models")


@pytest.mark.parametrize("package", ENGINE_PACKAGES)
def test_no_engine_package_imports_the_service_packages_or_the_settings(package: str) -> None:
    """The engine takes its folders and caps as arguments: only the CLI and the service read GSCORE_*."""
    imports = package_imports(package)
    assert imports, package
    assert offending(imports, (*SERVICE_PACKAGES, "gscore.settings")) == {}


@pytest.mark.parametrize("module", ["gscore/pipeline.py", "gscore/scoring.py"])
def test_the_engine_entry_points_read_no_settings(module: str) -> None:
    imports = {module: imported_modules(REPO_ROOT / module, module.removesuffix(".py").replace("/", "."))}
    assert offending(imports, (*SERVICE_PACKAGES, "gscore.settings")) == {}


def test_no_module_imports_the_old_top_level_packages() -> None:
    """Everything lives under ``gscore``: an import of a bare ``models``/``service``/... would be another project's."""
    imports = package_imports("gscore")
    assert offending(imports, ("models", "jobstore", "service", "worker")) == {}
