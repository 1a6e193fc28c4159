"""Pipelines against the real embedded stack (API + worker subprocesses, the session's ``embedded_stack``):
``gscore sweep submit --wait`` ends with the collection's ranking; ``gscore ranking --mlflow-experiment``
logs it to a real MLflow store where it reads back equal to the ranking JSON; the Lightning callback
scores remotely (submit + wait) and files the checkpoint in a collection with its hyperparameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DIGITS_ARCH, REPO_ROOT, Stack
from pipelines_lib import expected_mlflow_metrics, sweep_command, write_checkpoints, write_csv

from gscore.client import Client

SWEEP = "pipelines-sweep"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GSCORE_", "MLFLOW_"))}
    return {**env, **extra}


def test_sweep_wait_prints_the_ranking_and_mlflow_reads_it_back(
    embedded_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's SQLite store takes 7 s to create
    from mlflow.tracking import MlflowClient

    write_checkpoints(tmp_path, 3)
    manifest = write_csv(
        tmp_path / "sweep.csv",
        "checkpoint,model_name,test_accuracy,train_accuracy,lr",
        [f"ckpt/m{i}.safetensors,lr{i},0.{70 + 5 * i},1.0,{10.0**-i}" for i in range(3)],
    )
    command = [*sweep_command(manifest, embedded_stack.url, SWEEP), "--wait", "--json", "--resamples", "50"]
    command.remove("--no-progress")  # the bar goes to stderr
    sweep = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    printed = json.loads(sweep.stdout)
    with Client(embedded_stack.url) as client:
        ranking = client.ranking(SWEEP, measures=["c3"], n_resamples=50)
    assert printed == ranking and ranking["n_models"] == 3 and ranking["not_scored"] == []
    assert [m["name"] for m in ranking["measures"]["c3"]["ranking"]] != []
    assert f"{SWEEP}: 100%" in sweep.stderr and "3/3" in sweep.stderr  # the collection's one bar

    store = (tmp_path / "mlruns").as_uri()
    logged = subprocess.run(
        [sys.executable, "-m", "gscore.cli.main", "ranking", SWEEP, "--measures", "c3", "--resamples", "50", "--json", "--url", embedded_stack.url,
         "--mlflow-experiment", "selection"],
        cwd=REPO_ROOT, env=_env(MLFLOW_TRACKING_URI=store, MLFLOW_ALLOW_FILE_STORE="true"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert logged.returncode == 0, logged.stderr
    run_id = logged.stderr.split("run ")[-1].split()[0]
    tracking = MlflowClient(tracking_uri=store)
    run = tracking.get_run(run_id)
    assert run.data.metrics == expected_mlflow_metrics(ranking) and "c3/tau" in run.data.metrics
    out = Path(tracking.download_artifacts(run_id, "", str(tmp_path / "artifacts")))
    assert json.loads((out / "ranking.json").read_text()) == json.loads(logged.stdout) == ranking
    assert (out / "plots" / "c3.png").read_bytes().startswith(b"\x89PNG")


def test_lightning_callback_scores_through_the_service(embedded_stack: Stack, tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from pipelines_lib import (
        PROBE,
        DigitsClassifier,
        MemoryLogger,
        digits_loader,
        reference,
        trainer,
    )

    from gscore.integrations.lightning import GScoreCallback

    memory = MemoryLogger()
    with Client(embedded_stack.url) as client:
        callback = GScoreCallback(
            "digits", ["c3", "c4"], model_attribute="model", client=client, arch=DIGITS_ARCH,
            collection="lightning-runs", model_name="lr0.05", train_accuracy_metric="train_acc", timeout=120,
            **PROBE,
        )  # fmt: skip
        module = DigitsClassifier(lr=0.05)
        trainer(tmp_path, [callback], [memory], max_steps=2).fit(module, digits_loader())
        (entry,) = client.collection("lightning-runs")["models"]
    assert memory.gscore_values()[2] == pytest.approx(reference(module.model), rel=1e-6)
    assert entry["model_name"] == "lr0.05" and entry["state"] == "succeeded"
    assert entry["hyperparameters"] == {"lr": 0.05, "optimizer": "sgd"}
    assert 0 <= entry["train_accuracy"] <= 1
    assert callback.results[-1].meta["job_id"] == entry["job_id"]
