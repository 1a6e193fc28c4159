"""The initial checkpoint through every route with the same numbers: ``gscore.score(initial=...)``, ``gscore
score --initial-checkpoint``, ``POST /v1/jobs`` with an ``initial_checkpoint`` part (in process: the API's
TestClient and the worker's ``execute_job``), ``Client.submit(initial=...)`` and ``gscore submit
--initial-checkpoint``; dedupe and idempotency see it; a mismatched, unsafe or empty one is refused at
submission naming the part, with nothing stored. And ``/v1/measures`` shows each measure's family."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_ARCH, assert_problem
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_routes_inprocess import MARKER, Exploit, inprocess_settings

import gscore
from gscore.cli.main import main
from gscore.client import Client
from gscore.inputs.checkpoints.loading import load_into, read_state_dict, save_safetensors
from gscore.models import build_model
from gscore.service.app import create_app
from gscore.worker.execute import execute_job

MEASURES = ["margin", "distance_to_init", "layer_rotation"]
SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 8, "measures": MEASURES}


def saved(seed: int, path: Path, arch: dict = DIGITS_ARCH) -> Path:
    torch.manual_seed(seed)
    model = build_model(arch)
    if seed:  # a "trained" model: moved away from its initialization, with BatchNorm statistics
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_var.uniform_(0.5, 2.0)
    save_safetensors(model, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("initial")
    return saved(7, folder / "final.safetensors"), saved(0, folder / "initial.safetensors")


@pytest.fixture(scope="module")
def reference(checkpoints: tuple[Path, Path]) -> Callable[[int], dict[str, float]]:
    """The numbers of gscore.score on the same weights, for a seed (it picks the probe subset)."""
    final, initial = build_model(DIGITS_ARCH), build_model(DIGITS_ARCH)
    load_into(final, read_state_dict(checkpoints[0]))
    load_into(initial, read_state_dict(checkpoints[1]))

    @functools.cache
    def scores(seed: int) -> dict[str, float]:
        result = gscore.score(
            final.eval(),
            "digits",
            MEASURES,
            samples_per_class=8,
            seed=seed,
            device="cpu",
            initial=initial.state_dict(),
        )
        assert all(s["status"] == "ok" for s in result.status.values()), result.status
        assert result.scores["distance_to_init"] > 0 and 0 < result.scores["layer_rotation"] < 1
        return result.scores

    return scores


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(inprocess_settings(tmp_path_factory.mktemp("inprocess-initial")), run_reaper=False)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:  # one lifespan: its end shuts the publisher down
        yield client


def submit(client: TestClient, final: Path, initial: Path | bytes | None, spec: dict = SPEC, **fields: str):
    files = {"checkpoint": (final.name, final.read_bytes())}
    if initial is not None:
        content = initial if isinstance(initial, bytes) else initial.read_bytes()
        files["initial_checkpoint"] = ("initial.bin", content)
    return client.post("/v1/jobs", data={"spec": json.dumps(spec), **fields}, files=files)


def run_worker(app: FastAPI, job_id: str) -> dict:
    settings = app.state.context.settings
    assert execute_job(job_id, settings, "inprocess-worker") == "succeeded"
    return app.state.context.repo.get(job_id).result


def stored_files(app: FastAPI) -> set[str]:
    return {p.name for p in app.state.context.storage.checkpoints_dir.iterdir()}


def test_cli_score_gives_the_python_api_numbers(checkpoints, reference, capsys) -> None:
    final, initial = checkpoints
    argv = ["score", str(final), "--arch", json.dumps(DIGITS_ARCH), "--dataset", "digits", "--device", "cpu"]
    argv += ["--samples-per-class", "8", "--measures", ",".join(MEASURES), "--json", "--no-progress"]
    assert main([*argv, "--initial-checkpoint", str(initial)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scores"] == pytest.approx(reference(0), rel=1e-9)
    assert main(argv) == 0  # without it: undefined, saying what to send
    status = json.loads(capsys.readouterr().out)["status"]["layer_rotation"]
    assert status["status"] == "undefined" and "--initial-checkpoint" in status["reason"]


def test_http_job_gives_the_same_numbers_and_dedupes_on_the_initial_checkpoint(
    client: TestClient, app: FastAPI, checkpoints, reference
) -> None:
    final, initial = checkpoints
    spec = {**SPEC, "seed": 11}
    first = submit(client, final, initial, spec)
    assert first.status_code == 202, first.text
    job = first.json()
    assert job["state"] == "queued"
    assert run_worker(app, job["id"])["scores"] == pytest.approx(reference(11), rel=1e-9)
    again = submit(client, final, initial, spec).json()
    assert again["state"] == "succeeded" and again["result"]["meta"]["deduplicated_from"] == job["id"]
    without = submit(client, final, None, spec).json()  # another job: not answered by the first
    assert without["state"] == "queued"
    other_initial = submit(client, final, final, spec).json()
    assert other_initial["state"] == "queued"


def test_an_idempotency_key_reused_with_another_initial_checkpoint_is_refused(
    client: TestClient, checkpoints
) -> None:
    final, initial = checkpoints
    spec = {**SPEC, "seed": 12}
    client.headers["Idempotency-Key"] = uuid.uuid4().hex
    first = submit(client, final, initial, spec)
    assert submit(client, final, initial, spec).json()["id"] == first.json()["id"]
    assert_problem(submit(client, final, final, spec), 422, "idempotency-key-reused")
    assert_problem(submit(client, final, None, spec), 422, "idempotency-key-reused")
    del client.headers["Idempotency-Key"]


def test_client_and_cli_submit_send_it(
    client: TestClient, app: FastAPI, checkpoints, reference, monkeypatch, capsys
) -> None:
    final, initial = checkpoints
    api = Client("http://testserver")
    api._http = client
    monkeypatch.setattr(Client, "close", lambda self: None)  # the TestClient outlives the call
    job = api.submit(final, DIGITS_ARCH, "digits", **_options(13), initial=initial)
    assert run_worker(app, job["id"])["scores"] == pytest.approx(reference(13), rel=1e-9)

    monkeypatch.setattr("gscore.cli.remote._client", lambda args: api)
    argv = ["submit", str(final), "--arch", json.dumps(DIGITS_ARCH), "--dataset", "digits", "--json"]
    argv += ["--samples-per-class", "8", "--measures", ",".join(MEASURES), "--seed", "14"]
    assert main([*argv, "--initial-checkpoint", str(initial)]) == 0
    job = json.loads(capsys.readouterr().out)
    assert run_worker(app, job["id"])["scores"] == pytest.approx(reference(14), rel=1e-9)
    assert main([*argv, "--initial-checkpoint", str(final.with_name("missing.safetensors"))]) == 2
    assert "--initial-checkpoint file" in capsys.readouterr().err


def _options(seed: int) -> dict:
    return {"samples_per_class": 8, "measures": MEASURES, "seed": seed}


def test_mismatched_unsafe_or_empty_initial_checkpoints_are_refused_naming_the_part(
    client: TestClient, app: FastAPI, checkpoints, tmp_path: Path
) -> None:
    final, _ = checkpoints
    other_arch = {**DIGITS_ARCH, "width": 4}
    mismatched = saved(0, tmp_path / "other.safetensors", other_arch)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"weight": Exploit()}, unsafe)
    jobs_before = len(client.get("/v1/jobs").json()["jobs"])
    files_before = stored_files(app)
    spec = {**SPEC, "seed": 15}
    problem = assert_problem(
        submit(client, final, mismatched, spec), 422, "checkpoint-mismatch", field="initial_checkpoint"
    )
    assert problem["detail"].startswith("initial_checkpoint:")
    assert_problem(submit(client, final, unsafe, spec), 422, "invalid-checkpoint", field="initial_checkpoint")
    assert not MARKER.exists()
    assert_problem(submit(client, final, b"", spec), 422, "invalid-checkpoint", field="initial_checkpoint")
    assert_problem(
        submit(client, final, b"not weights at all", spec),
        422,
        "invalid-checkpoint",
        field="initial_checkpoint",
    )
    assert len(client.get("/v1/jobs").json()["jobs"]) == jobs_before
    assert stored_files(app) == files_before  # nothing half-stored: not even the valid checkpoint


def test_measures_catalog_lists_families_and_the_default_set(client: TestClient) -> None:
    measures = {m["name"]: m for m in client.get("/v1/measures").json()["measures"]}
    assert measures["margin"]["family"] == "norm" and measures["margin"]["default"] is True
    assert measures["ww_alpha"]["family"] == "spectral" and measures["ww_alpha"]["default"] is False
    assert measures["davies_bouldin"]["parameters"] == {"layer": "penultimate"}
    assert {m["family"] for m in measures.values()} == {
        "clustering",
        "sharpness",
        "intrinsic_dimension",
        "tangent",
        "norm",
        "representation",
        "spectral",
    }


def test_a_job_may_name_families(client: TestClient, app: FastAPI, checkpoints) -> None:
    final, _ = checkpoints
    job = submit(client, final, None, {**SPEC, "measures": ["representation", "c3"], "seed": 17}).json()
    result = run_worker(app, job["id"])
    assert set(result["scores"]) == {"davies_bouldin", "mixup_loss", "c3"}
    problem = assert_problem(
        submit(client, final, None, {**SPEC, "measures": ["norms"]}), 422, "invalid-spec", field="measures"
    )
    assert "norm, representation, spectral" in problem["detail"]
