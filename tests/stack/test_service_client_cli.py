"""The Python client and the ``gscore submit/status/collection`` verbs against the live embedded server."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import DIGITS_ARCH, Stack, run_gscore

from gscore.client import Client, ServiceError


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_gscore({**os.environ, "GSCORE_URL": stack.url}, *args)


def test_client_submit_wait_collection(embedded_stack: Stack, digits_checkpoint: Path) -> None:
    collection = f"client-{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    with Client(embedded_stack.url) as client:
        job = client.submit(
            digits_checkpoint,
            DIGITS_ARCH,
            "digits",
            measures=["c3"],
            samples_per_class=10,
            seed=5,
            collection=collection,
            model_name="a",
            hyperparameters={"lr": 0.01},
            test_accuracy=0.5,
            train_accuracy=0.9,
        )
        done = client.wait(job["id"], poll=0.2, timeout=120, progress=lambda j: seen.append(j["state"]))
        assert done["state"] == "succeeded" and seen[-1] == "succeeded"
        models = client.collection(collection)["models"]
        assert models[0]["model_name"] == "a" and models[0]["train_accuracy"] == 0.9
        assert models[0]["scores"] == done["result"]["scores"]
        assert any(c["name"] == collection for c in client.collections())
        assert client.jobs(collection=collection)["jobs"][0]["id"] == job["id"]
        assert {m["name"] for m in client.measures()} >= {"c1", "c2", "c3", "c4"}
        with pytest.raises(ServiceError) as caught:
            client.job("missing")
        assert caught.value.status == 404 and "Job not found" in str(caught.value)
        with pytest.raises(ServiceError) as caught:
            client.submit(digits_checkpoint, DIGITS_ARCH, "nope")
        assert caught.value.status == 422 and caught.value.problem["type"] == "invalid-dataset"


def test_cli_submit_status_collection(embedded_stack: Stack, digits_checkpoint: Path) -> None:
    collection = f"cli-{uuid.uuid4().hex[:6]}"
    submitted = run_cli(
        embedded_stack,
        "submit",
        str(digits_checkpoint),
        "--arch",
        json.dumps(DIGITS_ARCH),
        "--dataset",
        "digits",
        "--measures",
        "c3,c4",
        "--samples-per-class",
        "10",
        "--seed",
        "6",
        "--collection",
        collection,
        "--model-name",
        "cli-model",
        "--hyperparameters",
        '{"width": 8}',
        "--test-accuracy",
        "0.42",
        "--wait",
        "--json",
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["state"] == "succeeded" and set(job["result"]["scores"]) == {"c3", "c4"}

    status = run_cli(embedded_stack, "status", job["id"], "--wait")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{job['id']} succeeded") and "c3" in status.stdout

    table = run_cli(embedded_stack, "collection", collection)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()
    assert header.split() == ["model", "state", "width", "test_acc", "train_acc", "c3", "c4"]
    assert row.split()[:5] == ["cli-model", "succeeded", "8", "0.42", "-"]

    missing = run_cli(embedded_stack, "status", "no-such-job")
    assert missing.returncode == 2 and "Job not found" in missing.stderr
