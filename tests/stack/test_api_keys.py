"""API keys over HTTP against a real API and worker: key isolation (another key gets 404 for what a key made;
an admin key sees all), per-owner dedupe and Idempotency-Keys, 401/403 problem documents, the open routes,
and a keyless service refusing a non-loopback bind. Plus the key table itself (hashed, revocable)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import (
    DIGITS_ARCH,
    REPO_ROOT,
    Stack,
    assert_problem,
    free_port,
    stack_env,
    start_stack,
    submit_job,
    wait_for_job,
)

from gscore.client import Client, ServiceError
from gscore.jobstore.db import make_session_factory
from gscore.jobstore.keys import ApiKeys, split_key

SPEC = {
    "arch": DIGITS_ARCH,
    "dataset": "digits",
    "samples_per_class": 20,
    "measures": ["c3", "c4"],
    "seed": 7,
}


def _create_key(stack: Stack, name: str, *admin: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gscore.cli", "keys", "create", "--name", name, *admin],
        cwd=REPO_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert split_key(key) is not None and "only time" in done.stderr
    return key


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, digits_checkpoint: Path) -> Iterator[dict]:
    """A stack that first ran keyless (one job), then got keys team-a, team-b and an admin; team-a's job in
    collection 'a-sweep' has succeeded."""
    stack = start_stack(tmp_path_factory.mktemp("keys"))
    try:
        with stack.client() as anonymous:
            keyless = submit_job(anonymous, digits_checkpoint, SPEC, collection="keyless").json()
            assert anonymous.get("/v1/jobs").status_code == 200  # no key exists yet: open on loopback
        keys = {
            "a": _create_key(stack, "team-a"),
            "b": _create_key(stack, "team-b"),
            "admin": _create_key(stack, "ops", "--admin"),
        }
        with Client(stack.url, api_key=keys["a"]) as client_a:
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
            job_a = client_a.wait(job_a["id"], timeout=120)
        assert job_a["state"] == "succeeded", job_a
        yield {"stack": stack, "keys": keys, "job_a": job_a, "keyless": keyless}
    finally:
        stack.stop()


def _http(stack: Stack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.url, timeout=30, headers=headers)


def test_another_key_cannot_list_read_rank_plot_or_cancel(keyed: dict) -> None:
    stack, keys, job_a = keyed["stack"], keyed["keys"], keyed["job_a"]
    with _http(stack, keys["b"]) as b:
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
        assert_problem(
            b.get(f"/v1/jobs/{keyed['keyless']['id']}"), 404, "job-not-found"
        )  # keyless: admin only
    with _http(stack, keys["a"]) as a:
        assert a.get(f"/v1/jobs/{job_a['id']}").json()["result"]["scores"] == job_a["result"]["scores"]
        assert [m["model_name"] for m in a.get("/v1/collections/a-sweep").json()["models"]] == ["a1"]
        assert a.get("/v1/collections/a-sweep/plot.png").content.startswith(b"\x89PNG")
        assert [j["id"] for j in a.get("/v1/jobs").json()["jobs"]] == [job_a["id"]]
    # a mistyped name suggests only the caller's own collections
    with _http(stack, keys["a"]) as a, _http(stack, keys["b"]) as b:
        assert a.get("/v1/collections/a-swep").json()["near_matches"] == ["a-sweep"]
        assert b.get("/v1/collections/a-swep").json()["near_matches"] == []


def test_admin_key_sees_every_owner(keyed: dict) -> None:
    stack, keys, job_a = keyed["stack"], keyed["keys"], keyed["job_a"]
    with Client(stack.url, api_key=keys["admin"]) as admin:
        ids = {job["id"] for job in admin.jobs()["jobs"]}
        assert {job_a["id"], keyed["keyless"]["id"]} <= ids
        assert admin.job(job_a["id"])["result"]["scores"] == job_a["result"]["scores"]
        assert {"a-sweep", "keyless"} <= {c["name"] for c in admin.collections()}
        assert admin.ranking("a-sweep", n_resamples=0)["measures"]
    with _http(stack, keys["admin"]) as admin_http:
        assert admin_http.get("/metrics").status_code == 200


def test_dedupe_and_idempotency_keys_are_per_owner(keyed: dict, digits_checkpoint: Path) -> None:
    stack, keys, job_a = keyed["stack"], keyed["keys"], keyed["job_a"]
    with _http(stack, keys["b"]) as b, _http(stack, keys["a"]) as a:
        again_a = submit_job(a, digits_checkpoint, SPEC, collection="a-sweep", model_name="a2").json()
        assert again_a["state"] == "succeeded"  # the same owner's identical job answers at once
        assert again_a["result"]["meta"]["deduplicated_from"] == job_a["id"]
        job_b = submit_job(b, digits_checkpoint, SPEC, collection="b-sweep").json()
        assert job_b["state"] == "queued"  # never answered with team-a's job
        done_b = wait_for_job(b, job_b["id"], ("succeeded", "failed"))
        assert done_b["state"] == "succeeded"
        assert done_b["result"]["meta"].get("deduplicated_from") != job_a["id"]
        assert done_b["result"]["scores"] == pytest.approx(job_a["result"]["scores"])
        spec = {**SPEC, "seed": 8}
        with digits_checkpoint.open("rb") as handle:
            first = a.post(
                "/v1/jobs",
                data={"spec": __import__("json").dumps(spec)},
                files={"checkpoint": ("c", handle)},
                headers={"Idempotency-Key": "same-key"},
            ).json()
        with digits_checkpoint.open("rb") as handle:
            other = b.post(
                "/v1/jobs",
                data={"spec": __import__("json").dumps(spec)},
                files={"checkpoint": ("c", handle)},
                headers={"Idempotency-Key": "same-key"},
            ).json()
        assert first["id"] != other["id"]
        assert_problem(b.get(f"/v1/jobs/{first['id']}"), 404, "job-not-found")


def test_uploaded_datasets_belong_to_their_key(keyed: dict, tmp_path: Path) -> None:
    stack, keys = keyed["stack"], keyed["keys"]
    path = tmp_path / "probe-a.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((20, 1, 8, 8), dtype=np.float32), y=np.arange(20) % 5)
    with Client(stack.url, api_key=keys["a"]) as a:
        assert a.upload_dataset(path, name="probe-a")["name"] == "probe-a"
        assert "probe-a" in {d["name"] for d in a.datasets()}
    with Client(stack.url, api_key=keys["b"]) as b:
        assert "probe-a" not in {d["name"] for d in b.datasets()}
    with Client(stack.url, api_key=keys["admin"]) as admin:
        assert "probe-a" in {d["name"] for d in admin.datasets()}


def test_missing_unknown_and_revoked_keys_get_401_and_non_admin_403(keyed: dict) -> None:
    stack, keys = keyed["stack"], keyed["keys"]
    with _http(stack, None) as anonymous:
        for path in ("/v1/jobs", "/v1/collections", "/v1/datasets", "/v1/measures"):
            response = anonymous.get(path)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_problem(anonymous.get("/metrics"), 401, "unauthorized")
        for path in ("/healthz", "/", "/docs", "/openapi.json", "/dashboard/api.js"):
            assert anonymous.get(path).status_code == 200, path
    key_id, secret = split_key(keys["a"])
    with _http(
        stack, f"gsk_{key_id}_{secret[:-1]}x" if secret[-1] != "x" else f"gsk_{key_id}_{secret[:-1]}y"
    ) as forged:
        assert_problem(forged.get("/v1/jobs"), 401, "unauthorized")
    with _http(stack, "not-a-key") as garbage:
        assert_problem(garbage.get("/v1/jobs"), 401, "unauthorized")
    with _http(stack, keys["b"]) as b:
        assert_problem(b.get("/metrics"), 403, "forbidden")
    revocable = _create_key(stack, "team-c")
    with _http(stack, revocable) as c:
        assert c.get("/v1/jobs").status_code == 200
        done = subprocess.run(
            [sys.executable, "-m", "gscore.cli", "keys", "revoke", split_key(revocable)[0]],
            cwd=REPO_ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        problem = assert_problem(c.get("/v1/jobs"), 401, "unauthorized")
        assert "revoked" in problem["detail"]
    with pytest.raises(ServiceError) as raised, Client(stack.url, api_key="gsk_0000000000000000_nope") as bad:
        bad.jobs()
    assert raised.value.status == 401


def test_cli_takes_the_key_from_option_and_environment(keyed: dict) -> None:
    stack, keys, job_a = keyed["stack"], keyed["keys"], keyed["job_a"]
    base = [sys.executable, "-m", "gscore.cli", "status", job_a["id"], "--url", stack.url]
    with_option = subprocess.run(
        [*base, "--api-key", keys["a"]],
        cwd=REPO_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_option.returncode == 0 and with_option.stdout.startswith(f"{job_a['id']} succeeded")
    with_env = subprocess.run(
        base,
        cwd=REPO_ROOT,
        env={**stack.env, "GSCORE_API_KEY": keys["b"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_env.returncode == 2 and "404" in with_env.stderr
    without = subprocess.run(base, cwd=REPO_ROOT, env=stack.env, capture_output=True, text=True, timeout=60)
    assert without.returncode == 2 and "401" in without.stderr


def test_keys_are_stored_hashed_and_listed_without_secrets(keyed: dict) -> None:
    stack, keys = keyed["stack"], keyed["keys"]
    sessions = make_session_factory(f"sqlite:///{(stack.data_dir / 'gscore.db').resolve()}", migrate=False)
    records = {record.id: record for record in ApiKeys(sessions).all()}
    key_id, secret = split_key(keys["a"])
    assert records[key_id].secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert records[key_id].name == "team-a" and not records[key_id].admin
    listed = subprocess.run(
        [sys.executable, "-m", "gscore.cli", "keys", "list"],
        cwd=REPO_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and key_id in listed.stdout and secret not in listed.stdout


@pytest.mark.parametrize("verb", ["serve", "up"])
def test_keyless_service_refuses_a_non_loopback_bind(verb: str, tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "gscore.cli", verb, "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "gscore keys create" in done.stderr and "0.0.0.0" in done.stderr
