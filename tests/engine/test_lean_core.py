"""The core install (no extras) is enough for the engine: importing it and scoring a model, through
``gscore.score`` and ``gscore score`` on an ``.npz``, never imports the service's packages (FastAPI, Celery,
SQLAlchemy, ...), the HTTP client or matplotlib. A verb that needs an extra says which one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

# the packages of the extras (pyproject.toml): none may be imported by the engine or the local verbs
BLOCKED = (
    "fastapi",
    "starlette",
    "uvicorn",
    "celery",
    "kombu",
    "sqlalchemy",
    "alembic",
    "redis",
    "httpx",
    "matplotlib",
    "plotly",
    "prometheus_client",
)

BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""

SCRIPT = """
import json, sys
import numpy as np
import torch
import gscore
from gscore.cli.main import main
from gscore.inputs.checkpoints.loading import save_safetensors
from gscore.models import build_model

arch = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 4}
torch.manual_seed(0)
model = build_model(arch)
rng = np.random.default_rng(0)
x = rng.random((40, 1, 8, 8), dtype=np.float32)
y = np.arange(40) % 4
in_memory = gscore.score(model, (torch.from_numpy(x), torch.from_numpy(y)), ["c3", "c4"], device="cpu")
np.savez(sys.argv[1] + "/probe.npz", x=x, y=y)
save_safetensors(model, sys.argv[1] + "/m.safetensors")
code = main(["score", sys.argv[1] + "/m.safetensors", "--arch", json.dumps(arch), "--dataset",
             sys.argv[1] + "/probe.npz", "--measures", "c3,c4", "--device", "cpu", "--json"])
print(json.dumps({"code": code, "in_memory": in_memory.scores,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
"""


def run_blocked(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + script, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_engine_and_the_local_cli_score_without_the_extras(tmp_path: Path) -> None:
    done = run_blocked(SCRIPT, str(tmp_path))
    assert done.returncode == 0, done.stderr
    *cli_lines, summary_line = done.stdout.strip().splitlines()  # the CLI's --json, then the script's line
    summary, cli_json = json.loads(summary_line), "\n".join(cli_lines)
    assert summary["code"] == 0 and summary["loaded"] == []
    # the CLI on the saved weights gives the in-memory call's numbers
    assert json.loads(cli_json)["scores"] == summary["in_memory"]
    assert set(summary["in_memory"]) == {"c3", "c4"}


def test_a_verb_that_needs_an_extra_names_it(tmp_path: Path) -> None:
    script = """
import sys
from gscore.cli.main import main
sys.exit(main(["status", "some-job", "--url", "http://127.0.0.1:9"]))
"""
    done = run_blocked(script)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "gscore: error: `gscore status` needs the optional package 'httpx': pip install 'gscore[client]'"
    )
