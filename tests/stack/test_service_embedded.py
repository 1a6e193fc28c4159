"""End to end in embedded mode (SQLite database and broker, nothing installed): a real uvicorn API and a
real Celery worker, driven over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import DIGITS_ARCH, Stack, submit_job, wait_for_job

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 20, "measures": ["c1", "c3", "c4"]}
FINAL = ("succeeded", "failed", "cancelled")


def direct_scores(checkpoint: Path, dataset: str = "digits") -> dict[str, float]:
    from gscore.pipeline import ScoreRequest, score

    request = ScoreRequest(
        checkpoint=checkpoint,
        arch=DIGITS_ARCH,
        dataset=dataset,
        samples_per_class=20,
        measures=["c1", "c3", "c4"],
        device="cpu",
    )
    return score(request)["scores"]


def assert_same_score(served: float | None, direct: float | None) -> None:
    """The served score equals the engine's (an undefined score is null on both sides)."""
    if direct is None:
        assert served is None
    else:
        assert served == pytest.approx(direct, rel=1e-5, abs=1e-7)


def test_job_scores_equal_the_engine_and_dedupe_answers_from_the_table(
    embedded_stack: Stack, digits_checkpoint: Path
) -> None:
    collection = f"sweep-{uuid.uuid4().hex[:6]}"
    with embedded_stack.client() as client:
        response = submit_job(
            client,
            digits_checkpoint,
            SPEC,
            collection=collection,
            model_name="m1",
            hyperparameters='{"lr": 0.1, "aug": true}',
            test_accuracy="0.71",
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["state"] in ("queued", "running")
        done = wait_for_job(client, job["id"], FINAL)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 1 and done["started_at"] and done["finished_at"]
        expected = direct_scores(digits_checkpoint)
        assert set(done["result"]["scores"]) == {"c1", "c3", "c4"}
        for name, value in expected.items():
            assert_same_score(done["result"]["scores"][name], value)
        assert done["result"]["meta"]["samples"] == 100
        for name, value in done["result"]["scores"].items():  # a null score comes with its reason
            status = done["result"]["status"][name]
            assert (value is None) == (status["status"] != "ok"), (name, status)
            assert value is not None or status["reason"], (name, status)

        again = submit_job(client, digits_checkpoint, SPEC, collection=collection, model_name="m2").json()
        assert again["state"] == "succeeded" and again["id"] != job["id"]
        assert again["result"]["scores"] == done["result"]["scores"]
        assert again["result"]["meta"]["deduplicated_from"] == job["id"]

        models = client.get(f"/v1/collections/{collection}").json()["models"]
        assert [m["model_name"] for m in models] == ["m1", "m2"]
        assert models[0]["hyperparameters"] == {"lr": 0.1, "aug": True}
        assert models[0]["test_accuracy"] == 0.71 and models[0]["scores"] == done["result"]["scores"]
        names = {c["name"]: c["models"] for c in client.get("/v1/collections").json()["collections"]}
        assert names[collection] == 2


def test_listing_pages_with_an_opaque_cursor(embedded_stack: Stack, digits_checkpoint: Path) -> None:
    collection = f"paged-{uuid.uuid4().hex[:6]}"
    with embedded_stack.client() as client:
        ids = [
            # three distinct jobs on one probe (a collection refuses a second probe: other seeds would be 409s)
            submit_job(
                client,
                digits_checkpoint,
                {**SPEC, "params": {"c3": {"k": k}}},
                collection=collection,
                model_name=f"k{k}",
            ).json()["id"]
            for k in (10, 20, 30)
        ]
        first = client.get("/v1/jobs", params={"collection": collection, "limit": 2}).json()
        assert [j["id"] for j in first["jobs"]] == ids[::-1][:2] and first["next_cursor"]
        second = client.get(
            "/v1/jobs", params={"collection": collection, "limit": 2, "cursor": first["next_cursor"]}
        ).json()
        assert [j["id"] for j in second["jobs"]] == [ids[0]] and second["next_cursor"] is None
        for job_id in ids:
            assert wait_for_job(client, job_id, FINAL)["state"] == "succeeded"
        succeeded = client.get("/v1/jobs", params={"collection": collection, "state": "succeeded"}).json()
        assert len(succeeded["jobs"]) == 3


def test_uploaded_dataset_is_scored_by_name(
    embedded_stack: Stack, digits_checkpoint: Path, tmp_path: Path
) -> None:
    from gscore.inputs.datasets import load_probe_set

    probe = load_probe_set("digits", "train")
    npz = tmp_path / "my-digits.npz"
    np.savez(npz, x=probe.x.numpy(), y=probe.y.numpy(), sub=probe.sub.numpy())
    with embedded_stack.client() as client, npz.open("rb") as handle:
        response = client.post(
            "/v1/datasets", files={"file": ("my-digits.npz", handle)}, data={"name": "mydigits"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["name"] == "mydigits" and response.json()["classes"] == 5
        listed = {d["name"]: d for d in client.get("/v1/datasets").json()["datasets"]}
        assert listed["mydigits"]["source"] == "uploaded" and listed["digits"]["installed"] is True
        job = submit_job(client, digits_checkpoint, {**SPEC, "dataset": "mydigits"}).json()
        done = wait_for_job(client, job["id"], FINAL)
        assert done["state"] == "succeeded", done
        assert done["result"]["meta"]["dataset"] == "mydigits"
        # the same samples as the built-in digits train split: the same scores
        for name, value in direct_scores(digits_checkpoint).items():
            assert_same_score(done["result"]["scores"][name], value)


def test_idempotency_key_returns_the_first_answer(embedded_stack: Stack, digits_checkpoint: Path) -> None:
    key = uuid.uuid4().hex
    with embedded_stack.client() as client:
        client.headers["Idempotency-Key"] = key
        first = submit_job(client, digits_checkpoint, {**SPEC, "seed": 11}).json()
        second = submit_job(client, digits_checkpoint, {**SPEC, "seed": 11}).json()
        assert first["id"] == second["id"]


def test_catalog_health_and_metrics(embedded_stack: Stack, digits_checkpoint: Path) -> None:
    with embedded_stack.client() as client:
        job = submit_job(client, digits_checkpoint, {**SPEC, "seed": 4242}).json()  # a job computed here
        assert wait_for_job(client, job["id"], FINAL)["state"] == "succeeded"
        measures = {m["name"]: m for m in client.get("/v1/measures").json()["measures"]}
        assert measures["c1"]["needs_hierarchy"] is True and measures["random_sharpness"]["orientation"] == -1
        assert client.get("/v1/architectures").json()["architectures"]
        datasets = {d["name"]: d for d in client.get("/v1/datasets").json()["datasets"]}
        assert datasets["cifar10"]["installed"] is False and datasets["cifar10"]["where"]["directory"]
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz").json()
        checks = {"database": "ok", "broker": "ok", "storage": "ok", "engine": "ok"}
        assert ready == {"status": "ready", "checks": checks}
        metrics = client.get("/metrics").text
        assert 'gscore_http_requests_total{method="GET",route="/readyz",status="200"}' in metrics
        assert 'gscore_jobs{state="succeeded"}' in metrics
        stage_counts = {
            line.split('"')[1]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("gscore_job_stage_seconds_count{")
        }
        assert {"load", "extract", "measures", "total"} <= set(stage_counts)
        assert stage_counts["total"] >= 1 and stage_counts["extract"] >= 1
        assert client.get("/docs").status_code == 200


def test_a_measure_that_cannot_be_computed_leaves_the_others(
    embedded_stack: Stack, digits_checkpoint: Path
) -> None:
    """An untrained 5-class model cannot lose 50% accuracy: its sharpness is undefined, yet the job succeeds
    with c3/c4 ok, the degenerate c1 undefined, each with its reason, and the measured probe accuracy."""
    spec = {
        **SPEC,
        "measures": ["c1", "c3", "c4", "random_sharpness"],
        "params": {"random_sharpness": {"samples": 50, "steps": 2, "draws": 2, "target_drop": 0.5}},
    }
    with embedded_stack.client() as client:
        response = submit_job(client, digits_checkpoint, spec)
        assert response.status_code == 202, response.text
        done = wait_for_job(client, response.json()["id"], FINAL)
    assert done["state"] == "succeeded", done
    result = done["result"]
    status = result["status"]
    assert status["c3"]["status"] == status["c4"]["status"] == "ok"
    assert isinstance(result["scores"]["c3"], float) and isinstance(result["scores"]["c4"], float)
    assert (
        status["random_sharpness"]["status"] == "undefined" and result["scores"]["random_sharpness"] is None
    )
    assert "below the target drop" in status["random_sharpness"]["reason"]
    assert status["c1"]["status"] == "undefined" and "0 by construction" in status["c1"]["reason"]
    assert 0.0 <= result["meta"]["probe_accuracy"] <= 1.0 and result["meta"]["split"] == "train"
