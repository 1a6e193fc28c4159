"""The package layering, read from the source (ast, function-local imports included): the job store imports
neither the HTTP layer nor the workers, the workers do not import the HTTP layer, and the engine imports
none of the three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

ENGINE_MODULES = (
    "gscore.measures",
    "gscore.ranking",
    "gscore.extraction",
    "gscore.sharpness",
    "gscore.intrinsic_dimension",
    "gscore.tangent_alignment",
    "gscore.measure_registry",
    "gscore.measure_table",
    "gscore.measure_inputs",
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
    bad = {
        module: sorted(name for name in names if name.split(".")[0] in forbidden)
        for module, names in imports.items()
    }
    return {module: names for module, names in bad.items() if names}


def test_the_parser_sees_top_level_local_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "import os.path\nfrom service import deps\n\n\ndef f():\n    from worker.tasks import x\n"
        "    from .routes import jobs\n    from . import app\n"
    )
    assert imported_modules(source, "service.probe") == {
        "os.path",
        "service",
        "service.deps",
        "worker.tasks",
        "worker.tasks.x",
        "service.routes",
        "service.routes.jobs",
        "service.app",
    }


def test_jobstore_imports_neither_service_nor_worker() -> None:
    imports = package_imports("jobstore")
    assert {"jobstore.db", "jobstore.jobs_repo", "jobstore.dedupe", "jobstore.dispatch"} <= set(imports)
    assert offending(imports, ("service", "worker")) == {}


def test_worker_does_not_import_service() -> None:
    imports = package_imports("worker")
    assert "jobstore.dedupe" in imports["worker.execute"]  # the same duplicate check as the API's
    assert offending(imports, ("service",)) == {}


def test_service_publishes_through_jobstore_not_worker() -> None:
    assert offending(package_imports("service"), ("worker",)) == {}


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_the_engine_imports_none_of_the_service_packages(module: str) -> None:
    path = REPO_ROOT / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        pytest.skip(f"{module} is not part of this tree yet")
    imports = {module: imported_modules(path)}
    assert offending(imports, ("service", "worker", "jobstore")) == {}
