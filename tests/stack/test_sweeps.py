"""Sweeps (gscore.sweeps, ``gscore sweep submit``): a manifest with bad rows is refused with their row numbers
before anything is sent; a ``gscore sweep submit`` process killed (SIGKILL) in the middle of a request and
run again leaves exactly one job per row; CSV cells read as numbers; row keys depend on content and spec.

The service runs in process (``create_app`` + TestClient) behind a small real HTTP server on 127.0.0.1 that
the CLI subprocess talks to; that server kills the CLI once the service has answered the second submission,
before the answer reaches it (the worst moment: the job exists, the client never learnt its id).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS_ARCH, REPO_ROOT, free_port
from fastapi.testclient import TestClient
from pipelines_lib import service_settings, sweep_command, write_checkpoints, write_csv

from gscore.client import Client
from gscore.service.app import create_app
from gscore.sweeps import ManifestError, SweepRow, check_rows, read_manifest, row_idempotency_key

HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive", "host"}


class KillingProxy:
    """A real HTTP server forwarding to an in-process app; after ``kill_after`` answered job submissions it
    SIGKILLs ``victim`` instead of passing the answer on."""

    def __init__(self, app_client: TestClient) -> None:
        self.app_client, self.lock = app_client, threading.Lock()
        self.submissions, self.kill_after = 0, 0
        self.victim: subprocess.Popen[bytes] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                with proxy.lock:
                    answer = proxy.app_client.request(self.command, self.path, content=body, headers=headers)
                    if self.command == "POST" and self.path.startswith("/v1/jobs"):
                        proxy.submissions += 1
                        if proxy.victim is not None and proxy.submissions == proxy.kill_after:
                            os.kill(proxy.victim.pid, signal.SIGKILL)
                            proxy.victim.wait()
                            self.close_connection = True
                            return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward  # noqa: N815 (http.server's names)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(service_settings(tmp_path / "data"), run_reaper=False)
    with TestClient(app) as client:
        yield client


def test_a_sweep_killed_midway_and_run_again_gives_exactly_one_job_per_row(
    tmp_path: Path, service: TestClient
) -> None:
    write_checkpoints(tmp_path, 4)
    manifest = write_csv(
        tmp_path / "sweep.csv",
        "checkpoint,model_name,test_accuracy,train_accuracy,lr,optimizer",
        [f"ckpt/m{i}.safetensors,lr{i},0.{80 + i},1.0,{10.0**-i},sgd" for i in range(4)],
    )
    proxy = KillingProxy(service)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSCORE_")}
    try:
        proxy.kill_after = 2
        proxy.victim = subprocess.Popen(
            sweep_command(manifest, proxy.url, "lr-sweep"), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE
        )
        assert proxy.victim.wait(timeout=120) == -signal.SIGKILL
        assert proxy.submissions == 2
        jobs = service.get("/v1/jobs", params={"collection": "lr-sweep"}).json()["jobs"]
        assert sorted(job["model_name"] for job in jobs) == ["lr0", "lr1"]  # the second one never answered

        proxy.victim = None
        rerun = subprocess.run(
            sweep_command(manifest, proxy.url, "lr-sweep"),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert proxy.submissions == 4  # the rerun sent only the two missing rows
        with Client(proxy.url) as client:  # a third run, from Python: sends nothing, answers the same jobs
            again = client.submit_sweep(
                manifest, arch=DIGITS_ARCH, dataset="digits", collection="lr-sweep", measures=["c3"],
                samples_per_class=10, wait=False,
            )  # fmt: skip
        assert proxy.submissions == 4
    finally:
        proxy.close()
    jobs = service.get("/v1/jobs", params={"collection": "lr-sweep"}).json()["jobs"]
    assert sorted(job["model_name"] for job in jobs) == ["lr0", "lr1", "lr2", "lr3"]
    assert len({job["checkpoint_sha256"] for job in jobs}) == 4
    by_name = {job["model_name"]: job for job in jobs}
    assert by_name["lr2"]["hyperparameters"] == {"lr": 0.01, "optimizer": "sgd"}
    assert by_name["lr2"]["test_accuracy"] == 0.82 and by_name["lr2"]["train_accuracy"] == 1.0
    assert {line.split()[0] for line in rerun.stdout.splitlines()} == {job["id"] for job in jobs}
    assert [job["id"] for job in again] == [by_name[f"lr{i}"]["id"] for i in range(4)]


def test_bad_rows_are_reported_with_their_numbers_and_nothing_is_sent(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, 2)
    manifest = write_csv(
        tmp_path / "bad.csv",
        "checkpoint,model_name,test_accuracy,lr",
        [
            "ckpt/m0.safetensors,a,0.9,0.1",
            "ckpt/missing.safetensors,b,0.9,0.1",  # row 2: no such file
            "ckpt/m1.safetensors,c,high,0.1",  # row 3: not a number
            "ckpt/m1.safetensors,a,0.8,0.1",  # row 4: repeats row 1's name
            ",d,0.7,0.1",  # row 5: no checkpoint
            "ckpt/m1.safetensors,e,93,0.1",  # row 6: a percentage, not a fraction
        ],
    )
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: any request would fail to connect
    with Client(nobody) as client, pytest.raises(ManifestError) as caught:
        client.submit_sweep(manifest, arch=DIGITS_ARCH, dataset="digits", collection="c")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["row 2", "row 3", "row 4", "row 5", "row 6"]
    assert "missing.safetensors" in problems[0] and "no such file" in problems[0]
    assert "test_accuracy must be a number in [0, 1] (got 'high')" in problems[1]
    assert "model_name 'a' repeats row 1" in problems[2]
    assert "checkpoint is missing" in problems[3]
    assert "(got 93)" in problems[4]

    cli = subprocess.run(
        sweep_command(manifest, nobody, "c"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 2 and "Invalid sweep manifest" in cli.stderr
    assert all(f"row {n}:" in cli.stderr for n in (2, 3, 4, 5, 6)) and "cannot reach" not in cli.stderr

    json_manifest = tmp_path / "bad.json"
    json_manifest.write_text(
        json.dumps(
            [
                {"checkpoint": "ckpt/m0.safetensors", "model_name": 7},
                {"checkpoint": "ckpt/m1.safetensors", "opt": {"name": "sgd"}},
                {
                    "checkpoint": "ckpt/m1.safetensors",
                    "model_name": "x",
                    "initial_checkpoint": "ckpt/init.pt",
                },
            ]
        )
    )
    with pytest.raises(ManifestError) as caught:
        check_rows(read_manifest(json_manifest), tmp_path)
    assert caught.value.problems == [
        "row 1: model_name must be a non-empty string (got 7)",
        "row 2: hyperparameter 'opt' must be a number, string or boolean (got {'name': 'sgd'})",
        f"row 3: initial_checkpoint 'ckpt/init.pt' is missing (no such file: {tmp_path / 'ckpt/init.pt'})",
    ]


def test_manifest_cells_and_row_keys(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, 2)
    manifest = write_csv(
        tmp_path / "m.csv",
        "checkpoint,lr,batch_size,augment,note,test_accuracy",
        ["ckpt/m0.safetensors,1e-3,128,true,v2,", "ckpt/m1.safetensors,0.5,64,false,,0.75"],
    )
    rows = check_rows(read_manifest(manifest), tmp_path)
    assert [row.model_name for row in rows] == ["m0", "m1"]  # default: the file's stem
    assert rows[0].hyperparameters == {"lr": 0.001, "batch_size": 128, "augment": True, "note": "v2"}
    assert rows[1].hyperparameters == {"lr": 0.5, "batch_size": 64, "augment": False}
    assert rows[0].test_accuracy is None and rows[1].test_accuracy == 0.75

    digests = {rows[0].checkpoint: "a" * 64, rows[1].checkpoint: "b" * 64}
    spec = {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"]}
    key = row_idempotency_key(rows[0], spec, "c", digests)
    assert key == row_idempotency_key(rows[0], dict(spec), "c", dict(digests))  # the same on every run
    assert len(key) < 255
    other_spec = {**spec, "measures": ["c4"]}
    renamed = SweepRow(**{**rows[0].__dict__, "model_name": "other"})
    changed = {**digests, rows[0].checkpoint: "c" * 64}
    variants = [
        row_idempotency_key(rows[0], other_spec, "c", digests),
        row_idempotency_key(rows[0], spec, "d", digests),
        row_idempotency_key(renamed, spec, "c", digests),
        row_idempotency_key(rows[0], spec, "c", changed),
    ]
    assert len({key, *variants}) == 5
