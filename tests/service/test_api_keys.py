"""API keys, in process (the API's TestClient, jobs run by the worker's ``execute_job``): key isolation
(another key gets 404 for what a key made; an admin key sees all), per-owner dedupe and Idempotency-Keys,
401/403 problem documents, the open routes, the CLI's key option and variable, and the key table itself
(hashed, revocable). A keyless service refusing a non-loopback bind needs real processes:
tests/stack/test_keyless_bind.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DIGITS_ARCH, assert_problem, submit_job
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_routes_inprocess import inprocess_settings

from gscore.cli import remote as cli_remote
from gscore.cli.main import main
from gscore.client import Client, ServiceError
from gscore.jobstore.keys import ApiKeys, split_key
from gscore.service.app import create_app
from gscore.settings import get_settings
from gscore.worker.execute import execute_job

SPEC = {
    "arch": DIGITS_ARCH,
    "dataset": "digits",
    "samples_per_class": 20,
    "measures": ["c3", "c4"],
    "seed": 7,
}


@contextlib.contextmanager
def cli_environment(app: FastAPI, **extra: str) -> Iterator[None]:
    """The CLI's settings are the app's (GSCORE_DATA_DIR), for the verbs that open the database."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GSCORE_DATA_DIR", str(app.state.context.settings.data_dir))
        for name, value in extra.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def run_cli(app: FastAPI, *argv: str, **env: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with cli_environment(app, **env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def create_key(app: FastAPI, name: str, *admin: str) -> str:
    code, out, err = run_cli(app, "keys", "create", "--name", name, *admin)
    assert code == 0, err
    key = out.strip()
    assert split_key(key) is not None and "only time" in err
    return key


def http(app: FastAPI, key: str | None) -> TestClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return TestClient(app, headers=headers)


def client(app: FastAPI, key: str | None) -> Client:
    """A :class:`gscore.client.Client` whose transport is the app (its key header as the client sets it)."""
    service = Client("http://testserver", api_key=key)
    headers = dict(service._http.headers)
    service._http.close()
    service._http = TestClient(app, base_url="http://testserver", headers=headers)
    return service


def run_job(app: FastAPI, job_id: str) -> dict[str, Any]:
    """The worker's attempt at ``job_id``, in process; the job as the owner reads it."""
    assert execute_job(job_id, app.state.context.settings, "inprocess-worker") == "succeeded"
    return app.state.context.repo.get(job_id)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, digits_checkpoint: Path) -> dict:
    """A service that first ran keyless (one job), then got keys team-a, team-b and an admin; team-a's job in
    collection 'a-sweep' has succeeded."""
    app = create_app(inprocess_settings(tmp_path_factory.mktemp("keys")), run_reaper=False)
    assert app.state.context.warmup.wait(120)
    keyless = submit_job(http(app, None), digits_checkpoint, SPEC, collection="keyless").json()
    assert http(app, None).get("/v1/jobs").status_code == 200  # no key exists yet: open on loopback
    keys = {
        "a": create_key(app, "team-a"),
        "b": create_key(app, "team-b"),
        "admin": create_key(app, "ops", "--admin"),
    }
    with client(app, keys["a"]) as client_a:
        job_a = client_a.submit(
            digits_checkpoint,
            DIGITS_ARCH,
            "digits",
            samples_per_class=20,
            measures=["c3", "c4"],
            seed=7,
            collection="a-sweep",
            model_name="a1",
            test_accuracy=0.5,
            train_accuracy=1.0,
        )
        run_job(app, job_a["id"])
        job_a = client_a.job(job_a["id"])
    assert job_a["state"] == "succeeded", job_a
    return {"app": app, "keys": keys, "job_a": job_a, "keyless": keyless}


def test_another_key_cannot_list_read_rank_plot_or_cancel(keyed: dict) -> None:
    app, keys, job_a = keyed["app"], keyed["keys"], keyed["job_a"]
    b = http(app, keys["b"])
    assert job_a["id"] not in {job["id"] for job in b.get("/v1/jobs").json()["jobs"]}
    assert b.get("/v1/jobs", params={"collection": "a-sweep"}).json()["jobs"] == []
    assert_problem(b.get(f"/v1/jobs/{job_a['id']}"), 404, "job-not-found")
    assert_problem(b.delete(f"/v1/jobs/{job_a['id']}"), 404, "job-not-found")
    assert "a-sweep" not in {c["name"] for c in b.get("/v1/collections").json()["collections"]}
    for path in (
        "/v1/collections/a-sweep",
        "/v1/collections/a-sweep/ranking",
        "/v1/collections/a-sweep/plot.png",
    ):
        assert_problem(b.get(path), 404, "collection-not-found")
    assert_problem(b.get(f"/v1/jobs/{keyed['keyless']['id']}"), 404, "job-not-found")  # keyless: admin only
    a = http(app, keys["a"])
    assert a.get(f"/v1/jobs/{job_a['id']}").json()["result"]["scores"] == job_a["result"]["scores"]
    assert [m["model_name"] for m in a.get("/v1/collections/a-sweep").json()["models"]] == ["a1"]
    assert a.get("/v1/collections/a-sweep/plot.png").content.startswith(b"\x89PNG")
    assert [j["id"] for j in a.get("/v1/jobs").json()["jobs"]] == [job_a["id"]]
    # a mistyped name suggests only the caller's own collections
    assert a.get("/v1/collections/a-swep").json()["near_matches"] == ["a-sweep"]
    assert b.get("/v1/collections/a-swep").json()["near_matches"] == []


def test_admin_key_sees_every_owner(keyed: dict) -> None:
    app, keys, job_a = keyed["app"], keyed["keys"], keyed["job_a"]
    with client(app, keys["admin"]) as admin:
        ids = {job["id"] for job in admin.jobs()["jobs"]}
        assert {job_a["id"], keyed["keyless"]["id"]} <= ids
        assert admin.job(job_a["id"])["result"]["scores"] == job_a["result"]["scores"]
        assert {"a-sweep", "keyless"} <= {c["name"] for c in admin.collections()}
        assert admin.ranking("a-sweep", n_resamples=0)["measures"]
    assert http(app, keys["admin"]).get("/metrics").status_code == 200


def test_dedupe_and_idempotency_keys_are_per_owner(keyed: dict, digits_checkpoint: Path) -> None:
    app, keys, job_a = keyed["app"], keyed["keys"], keyed["job_a"]
    a, b = http(app, keys["a"]), http(app, keys["b"])
    again_a = submit_job(a, digits_checkpoint, SPEC, collection="a-sweep", model_name="a2").json()
    assert again_a["state"] == "succeeded"  # the same owner's identical job answers at once
    assert again_a["result"]["meta"]["deduplicated_from"] == job_a["id"]
    job_b = submit_job(b, digits_checkpoint, SPEC, collection="b-sweep").json()
    assert job_b["state"] == "queued"  # never answered with team-a's job
    run_job(app, job_b["id"])
    done_b = b.get(f"/v1/jobs/{job_b['id']}").json()
    assert done_b["state"] == "succeeded"
    assert done_b["result"]["meta"].get("deduplicated_from") != job_a["id"]
    assert done_b["result"]["scores"] == pytest.approx(job_a["result"]["scores"])
    spec = {**SPEC, "seed": 8}
    answers = []
    for caller in (a, b):
        with digits_checkpoint.open("rb") as handle:
            answers.append(
                caller.post(
                    "/v1/jobs",
                    data={"spec": json.dumps(spec)},
                    files={"checkpoint": ("c", handle)},
                    headers={"Idempotency-Key": "same-key"},
                ).json()
            )
    first, other = answers
    assert first["id"] != other["id"]
    assert_problem(b.get(f"/v1/jobs/{first['id']}"), 404, "job-not-found")


def test_uploaded_datasets_belong_to_their_key(keyed: dict, tmp_path: Path) -> None:
    app, keys = keyed["app"], keyed["keys"]
    path = tmp_path / "probe-a.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((20, 1, 8, 8), dtype=np.float32), y=np.arange(20) % 5)
    with client(app, keys["a"]) as a:
        assert a.upload_dataset(path, name="probe-a")["name"] == "probe-a"
        assert "probe-a" in {d["name"] for d in a.datasets()}
    with client(app, keys["b"]) as b:
        assert "probe-a" not in {d["name"] for d in b.datasets()}
    with client(app, keys["admin"]) as admin:
        assert "probe-a" in {d["name"] for d in admin.datasets()}


def test_missing_unknown_and_revoked_keys_get_401_and_non_admin_403(keyed: dict) -> None:
    app, keys = keyed["app"], keyed["keys"]
    anonymous = http(app, None)
    for path in ("/v1/jobs", "/v1/collections", "/v1/datasets", "/v1/measures"):
        response = anonymous.get(path)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(anonymous.get("/metrics"), 401, "unauthorized")
    for path in ("/healthz", "/", "/docs", "/openapi.json", "/dashboard/api.js"):
        assert anonymous.get(path).status_code == 200, path
    key_id, secret = split_key(keys["a"])
    forged = f"gsk_{key_id}_{secret[:-1]}x" if secret[-1] != "x" else f"gsk_{key_id}_{secret[:-1]}y"
    assert_problem(http(app, forged).get("/v1/jobs"), 401, "unauthorized")
    assert_problem(http(app, "not-a-key").get("/v1/jobs"), 401, "unauthorized")
    assert_problem(http(app, keys["b"]).get("/metrics"), 403, "forbidden")
    revocable = create_key(app, "team-c")
    c = http(app, revocable)
    assert c.get("/v1/jobs").status_code == 200
    code, _, err = run_cli(app, "keys", "revoke", split_key(revocable)[0])
    assert code == 0, err
    problem = assert_problem(c.get("/v1/jobs"), 401, "unauthorized")
    assert "revoked" in problem["detail"]
    with pytest.raises(ServiceError) as raised, client(app, "gsk_0000000000000000_nope") as bad:
        bad.jobs()
    assert raised.value.status == 401


def test_cli_takes_the_key_from_option_and_environment(keyed: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    app, keys, job_a = keyed["app"], keyed["keys"], keyed["job_a"]
    # the verbs' client talks to the app; the key comes from --api-key or $GSCORE_API_KEY as in a real call
    monkeypatch.setattr(cli_remote, "_client", lambda args: client(app, getattr(args, "api_key", None)))
    monkeypatch.delenv("GSCORE_API_KEY", raising=False)
    base = ["status", job_a["id"]]
    code, out, _ = run_cli(app, *base, "--api-key", keys["a"])
    assert code == 0 and out.startswith(f"{job_a['id']} succeeded")
    code, _, err = run_cli(app, *base, GSCORE_API_KEY=keys["b"])
    assert code == 2 and "404" in err
    code, _, err = run_cli(app, *base)
    assert code == 2 and "401" in err


def test_keys_are_stored_hashed_and_listed_without_secrets(keyed: dict) -> None:
    app, keys = keyed["app"], keyed["keys"]
    records = {record.id: record for record in ApiKeys(app.state.context.sessions).all()}
    key_id, secret = split_key(keys["a"])
    assert records[key_id].secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert records[key_id].name == "team-a" and not records[key_id].admin
    code, out, err = run_cli(app, "keys", "list")
    assert code == 0 and key_id in out and secret not in out, err
