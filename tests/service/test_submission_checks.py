"""What `POST /v1/jobs` refuses early, over HTTP (in process, ``TestClient``): JSON nested or sized past the
limits, collection names that cannot be read back, checkpoints that do not fit their arch (from the
safetensors header), pickled modules, ``.pt2`` archives, hostile ONNX files, a collection's other probe or
a re-used model name; a 500 closes its connection cleanly (a real uvicorn). Every test ends with the
service still serving. A valid ONNX job scored by a real worker equals ``gscore score --model``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_ARCH, MAX_UPLOAD_BYTES, assert_problem, free_port, submit_job
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_routes_inprocess import inprocess_settings, insert_job

from gscore.inputs.checkpoints.loading import save_safetensors
from gscore.jobstore.specs import MAX_JSON_DEPTH, json_nesting_depth
from gscore.models import build_model
from gscore.service.app import create_app

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2pytorch")
from onnx import TensorProto, helper  # noqa: E402

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
ONNX_SPEC = {"dataset": "digits", "samples_per_class": 10, "measures": ["c1", "c2", "c3", "c4"]}
MARKER = Path(f"/tmp/gscore-test-pwned-{uuid.uuid4().hex[:8]}")


class Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(inprocess_settings(tmp_path_factory.mktemp("checks")), run_reaper=False)


@pytest.fixture(scope="module")
def running(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:  # one lifespan for the module (its shutdown stops the publisher)
        yield client


@pytest.fixture()
def client(running: TestClient) -> Iterator[TestClient]:
    yield running
    assert running.get("/healthz").status_code == 200  # still serving


def post_file(client: TestClient, part: str, content: bytes, spec: dict, **fields: str):
    data = {"spec": json.dumps(spec), **fields}
    return client.post("/v1/jobs", data=data, files={part: (f"upload.{part}", content)})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- JSON limits ---------------------------------------------------------------------------------------
def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def reference_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize(
    "text",
    ["1", "[]", '{"a": [1, {"b": []}]}', '{"x": "[[[{{{"}', '["\\"[", [["]"]]]', nested(7), "[[], [[]], {}]"],
)
def test_nesting_depth_matches_the_parsed_value(text: str) -> None:
    assert json_nesting_depth(text) == reference_depth(json.loads(text))


def test_deep_or_large_json_fields_are_a_422_naming_the_field(
    client: TestClient, digits_checkpoint: Path
) -> None:
    deep = nested(1000)
    assert len(deep) < 8 * 1024
    for field, value in (("spec", deep), ("hyperparameters", deep)):
        fields = {"spec": json.dumps(SPEC), field: value}
        with digits_checkpoint.open("rb") as handle:
            response = client.post("/v1/jobs", data=fields, files={"checkpoint": ("c", handle)})
        problem = assert_problem(response, 422, "invalid-spec", field=field)
        assert "1000 deep" in problem["detail"]
    params = json.dumps({**SPEC, "params": {"c3": {"k": json.loads(nested(MAX_JSON_DEPTH))}}})
    with digits_checkpoint.open("rb") as handle:
        response = client.post("/v1/jobs", data={"spec": params}, files={"checkpoint": ("c", handle)})
    assert_problem(response, 422, "invalid-spec", field="spec")
    big = json.dumps({**SPEC, "params": {"c3": {"note": "x" * 70_000}}})
    with digits_checkpoint.open("rb") as handle:
        response = client.post("/v1/jobs", data={"spec": big}, files={"checkpoint": ("c", handle)})
    assert "at most 65536" in assert_problem(response, 422, "invalid-spec", field="spec")["detail"]


@pytest.mark.parametrize("name", [" ", "\u3000", "", " lead", "trail ", "\u00a0x"])
def test_blank_or_padded_collection_names_are_refused(
    client: TestClient, digits_checkpoint: Path, name: str
) -> None:
    assert_problem(
        submit_job(client, digits_checkpoint, SPEC, collection=name), 422, "invalid-spec", field="collection"
    )
    assert_problem(
        submit_job(client, digits_checkpoint, SPEC, model_name="  "), 422, "invalid-spec", field="model_name"
    )


# ---- checkpoints: keys and shapes, pickles, .pt2 --------------------------------------------------------
def safetensors_bytes(tmp_path: Path, arch: dict, prefix: str = "", drop: str | None = None) -> bytes:
    torch.manual_seed(0)
    state = {f"{prefix}{key}": value for key, value in build_model(arch).state_dict().items()}
    if drop:
        state = {key: value for key, value in state.items() if not key.endswith(drop)}
    path = tmp_path / f"{uuid.uuid4().hex}.safetensors"
    save_safetensors(state, path)
    return path.read_bytes()


def test_a_checkpoint_that_does_not_fit_the_arch_is_a_422(client: TestClient, tmp_path: Path) -> None:
    narrow = safetensors_bytes(tmp_path, DIGITS_ARCH)
    wide = {**SPEC, "arch": {**DIGITS_ARCH, "width": 16}}
    problem = assert_problem(post_file(client, "checkpoint", narrow, wide), 422, "checkpoint-mismatch")
    assert "stages.0.0.conv.weight: checkpoint [8, 1, 3, 3] vs model [16, 1, 3, 3]" in problem["detail"]
    other_classes = {**SPEC, "arch": {**DIGITS_ARCH, "num_classes": 7}}
    problem = assert_problem(
        post_file(client, "checkpoint", narrow, other_classes), 422, "checkpoint-mismatch"
    )
    assert "vs model [7" in problem["detail"]
    foreign = safetensors_bytes(
        tmp_path, {"family": "mlp", "in_features": 64, "hidden": [16], "num_classes": 5}
    )
    problem = assert_problem(post_file(client, "checkpoint", foreign, SPEC), 422, "checkpoint-mismatch")
    assert "missing key" in problem["detail"] and "unexpected key" in problem["detail"]


def test_checkpoints_the_worker_loads_are_accepted(client: TestClient, tmp_path: Path) -> None:
    for content in (
        safetensors_bytes(tmp_path, DIGITS_ARCH, prefix="module."),  # DataParallel wrapper prefix
        safetensors_bytes(tmp_path, DIGITS_ARCH, prefix="_orig_mod."),
        safetensors_bytes(tmp_path, DIGITS_ARCH, drop="num_batches_tracked"),
    ):
        response = post_file(client, "checkpoint", content, {**SPEC, "seed": 101})
        assert response.status_code == 202, response.text
    model = build_model(DIGITS_ARCH)
    lightning = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict()],
        "hyper_parameters": {"lr": 0.1, "widths": (8, 16), "name": "cnn"},
        "epoch": 3,
    }
    buffer = io.BytesIO()
    torch.save(lightning, buffer)
    assert post_file(client, "checkpoint", buffer.getvalue(), {**SPEC, "seed": 102}).status_code == 202


def torch_zip(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_pickled_modules_and_code_are_refused_and_never_run(client: TestClient) -> None:
    module = torch_zip(build_model(DIGITS_ARCH))
    problem = assert_problem(post_file(client, "checkpoint", module, SPEC), 422, "invalid-checkpoint")
    assert "pickled nn.Module" in problem["detail"] and "gscore.models.small.SmallCNN" in problem["detail"]
    exploit = torch_zip({"weight": torch.zeros(1), "x": Exploit()})
    problem = assert_problem(post_file(client, "checkpoint", exploit, SPEC), 422, "invalid-checkpoint")
    assert "posix.system" in problem["detail"]
    stack_global = zipfile_bytes({"archive/data.pkl": pickle.dumps(Exploit(), protocol=4)})
    problem = assert_problem(post_file(client, "checkpoint", stack_global, SPEC), 422, "invalid-checkpoint")
    assert "STACK_GLOBAL" in problem["detail"]
    assert not MARKER.exists()


def zipfile_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def crafted_pt2() -> bytes:
    """A torch.export-like archive whose pickle would create MARKER when unpickled."""
    return zipfile_bytes(
        {
            "model/archive_format": b"pt2",
            "model/archive_version": b"0",
            "model/data.pkl": pickle.dumps(Exploit(), protocol=2),
        }
    )


@pytest.mark.parametrize("part", ["checkpoint", "model"])
def test_a_pt2_archive_is_refused_with_a_pointer_to_onnx(client: TestClient, part: str) -> None:
    spec = SPEC if part == "checkpoint" else ONNX_SPEC
    problem = assert_problem(post_file(client, part, crafted_pt2(), spec), 422, "invalid-checkpoint")
    assert "torch.export archive (.pt2)" in problem["detail"] and "ONNX" in problem["detail"]
    assert not MARKER.exists()


# ---- ONNX uploads --------------------------------------------------------------------------------------
class Custom(torch.nn.Module):
    """Not in any zoo: functional ReLU, a reused ReLU module, a residual add; digits-shaped (1x8x8, 5 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = self.relu(h + self.relu(self.conv(h)))
        return self.head(h.mean(dim=(2, 3)))


def export_custom(path: Path, seed: int) -> Path:
    import warnings

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Custom().eval(),
            (torch.randn(2, 1, 8, 8),),
            path,
            dynamo=False,
            input_names=["images"],
            dynamic_axes={"images": {0: "b"}},
        )
    return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_custom(tmp_path_factory.mktemp("onnx") / "custom.onnx", seed=3)


def gemm_proto() -> onnx.ModelProto:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], [0.1 * i for i in range(12)])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_valid_onnx_model_is_queued_and_deduplicated_on_its_bytes(
    client: TestClient, onnx_file: Path, tmp_path: Path
) -> None:
    repo = client.app.state.context.repo  # type: ignore[attr-defined]
    content = onnx_file.read_bytes()
    first = post_file(client, "model", content, ONNX_SPEC)
    assert first.status_code == 202, first.text
    job = repo.get(first.json()["id"])
    assert job.spec["arch"] == {"family": "onnx"} and job.model_name.startswith("onnx-")
    assert job.checkpoint_sha256 == hashlib.sha256(content).hexdigest()
    with_input = post_file(client, "model", content, {**ONNX_SPEC, "arch": {"input": None}})
    assert with_input.status_code == 202, with_input.text
    assert repo.get(with_input.json()["id"]).spec["arch"] == {"family": "onnx", "input": None}
    same = repo.get(post_file(client, "model", content, ONNX_SPEC).json()["id"])
    other_weights = export_custom(tmp_path / "other.onnx", seed=4).read_bytes()
    other = repo.get(post_file(client, "model", other_weights, ONNX_SPEC).json()["id"])
    assert same.dedupe_key == job.dedupe_key  # same bytes, same spec
    assert other.dedupe_key != job.dedupe_key  # other ONNX bytes under the same spec
    assert repo.get(with_input.json()["id"]).dedupe_key != job.dedupe_key


def test_onnx_route_misuse_is_a_422(client: TestClient, onnx_file: Path, digits_checkpoint: Path) -> None:
    content = onnx_file.read_bytes()
    bad_arch = post_file(client, "model", content, {**ONNX_SPEC, "arch": DIGITS_ARCH})
    assert_problem(bad_arch, 422, "invalid-spec", field="spec.arch")
    onnx_as_checkpoint = post_file(client, "checkpoint", content, {**ONNX_SPEC, "arch": {"family": "onnx"}})
    assert "'model' file part" in assert_problem(onnx_as_checkpoint, 422, "invalid-checkpoint")["detail"]
    with digits_checkpoint.open("rb") as handle:
        both = client.post(
            "/v1/jobs",
            data={"spec": json.dumps(SPEC)},
            files={"checkpoint": handle, "model": ("m.onnx", content)},
        )
    assert "not both" in assert_problem(both, 422, "invalid-spec", field="checkpoint")["detail"]
    neither = client.post("/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"other": ("x", b"1")})
    assert neither.status_code == 422
    zipped = post_file(client, "model", torch_zip(build_model(DIGITS_ARCH).state_dict()), ONNX_SPEC)
    assert "'checkpoint' part" in assert_problem(zipped, 422, "invalid-checkpoint")["detail"]


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd"])
def test_onnx_external_data_is_refused_without_opening_it(client: TestClient, location: str) -> None:
    proto = gemm_proto()
    weight = proto.graph.initializer[0]
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    response = post_file(client, "model", proto.SerializeToString(), ONNX_SPEC)
    problem = assert_problem(response, 422, "invalid-checkpoint")
    assert "external data" in problem["detail"] and repr(location) in problem["detail"]
    assert "root:" not in response.text


def test_truncated_unsupported_and_oversized_onnx_files_are_refused(
    client: TestClient, onnx_file: Path
) -> None:
    content = onnx_file.read_bytes()
    truncated = post_file(client, "model", content[: len(content) // 2], ONNX_SPEC)
    assert "ONNX" in assert_problem(truncated, 422, "invalid-checkpoint")["detail"]
    proto = gemm_proto()
    proto.graph.node[-1].output[0] = "r"
    proto.graph.node.extend([helper.make_node("Hardmax", ["r"], ["y"])])
    unsupported = post_file(client, "model", proto.SerializeToString(), ONNX_SPEC)
    assert "Hardmax (x1)" in assert_problem(unsupported, 422, "invalid-checkpoint")["detail"]
    oversized = post_file(client, "model", content + b"\0" * MAX_UPLOAD_BYTES, ONNX_SPEC)
    assert_problem(oversized, 413, "upload-too-large")
    empty = post_file(client, "model", b"", ONNX_SPEC)
    assert "empty" in assert_problem(empty, 422, "invalid-checkpoint")["detail"]


# ---- collections: one probe, one entry per model name ---------------------------------------------------
def test_a_collection_refuses_another_probe(client: TestClient, digits_checkpoint: Path) -> None:
    collection = unique("probe")
    first = submit_job(
        client, digits_checkpoint, {**SPEC, "seed": 200}, collection=collection, model_name="a"
    )
    assert first.status_code == 202
    for change in ({"seed": 201}, {"samples_per_class": 11}, {"split": "test"}):
        response = submit_job(
            client, digits_checkpoint, {**SPEC, "seed": 200, **change}, collection=collection, model_name="b"
        )
        problem = assert_problem(response, 409, "probe-mismatch", field="spec")
        assert "model 'a'" in problem["detail"] and first.json()["id"] in problem["detail"]
    same_probe = {**SPEC, "seed": 200, "measures": ["c3", "c4"]}  # other measures: the same probe
    assert (
        submit_job(client, digits_checkpoint, same_probe, collection=collection, model_name="b").status_code
        == 202
    )
    jobs = client.get("/v1/jobs", params={"collection": collection}).json()["jobs"]
    assert sorted(job["model_name"] for job in jobs) == ["a", "b"]  # refused jobs leave no row


def test_a_failed_entry_binds_neither_its_name_nor_its_probe(
    client: TestClient, app: FastAPI, digits_checkpoint: Path
) -> None:
    collection = unique("failed")
    insert_job(app, "failed", seed=300, collection=collection, model_name="a")
    response = submit_job(
        client, digits_checkpoint, {**SPEC, "seed": 301}, collection=collection, model_name="a"
    )
    assert response.status_code == 202, response.text


def test_a_model_name_is_reused_only_with_replace(
    client: TestClient, app: FastAPI, digits_checkpoint: Path
) -> None:
    collection = unique("names")
    spec = {**SPEC, "seed": 400}
    old = submit_job(client, digits_checkpoint, spec, collection=collection, model_name="m").json()
    again = submit_job(
        client, digits_checkpoint, {**spec, "measures": ["c4"]}, collection=collection, model_name="m"
    )
    problem = assert_problem(again, 409, "model-name-taken", field="model_name")
    assert "replace=true" in problem["detail"] and old["id"] in problem["detail"]
    bad_flag = submit_job(
        client, digits_checkpoint, spec, collection=collection, model_name="m", replace="maybe"
    )
    assert_problem(bad_flag, 422, "invalid-spec", field="replace")
    new = submit_job(
        client,
        digits_checkpoint,
        {**spec, "measures": ["c4"]},
        collection=collection,
        model_name="m",
        replace="true",
    )
    assert new.status_code == 202, new.text
    models = client.get(f"/v1/collections/{collection}").json()["models"]
    assert [(m["model_name"], m["job_id"]) for m in models] == [("m", new.json()["id"])]
    assert client.get(f"/v1/jobs/{old['id']}").json()["state"] == "cancelled"  # queued when replaced
    finished = insert_job(
        app,
        "succeeded",
        seed=400,
        collection=collection,
        model_name="done",
        result={"scores": {}, "meta": {}},
    )
    replaced = submit_job(
        client, digits_checkpoint, spec, collection=collection, model_name="done", replace="1"
    )
    assert replaced.status_code == 202
    assert client.get(f"/v1/jobs/{finished}").json()["state"] == "succeeded"  # kept, with its result


def test_an_idempotent_retry_is_not_a_name_conflict(client: TestClient, digits_checkpoint: Path) -> None:
    collection = unique("idem")
    client.headers["Idempotency-Key"] = uuid.uuid4().hex
    first = submit_job(
        client, digits_checkpoint, {**SPEC, "seed": 500}, collection=collection, model_name="m"
    )
    again = submit_job(
        client, digits_checkpoint, {**SPEC, "seed": 500}, collection=collection, model_name="m"
    )
    del client.headers["Idempotency-Key"]
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]


# ---- a 500 closes its connection cleanly ---------------------------------------------------------------
def test_an_unhandled_error_answers_a_problem_and_closes_the_connection_cleanly() -> None:
    import uvicorn

    from gscore.service.problems import install_problem_handlers

    boom = FastAPI()
    install_problem_handlers(boom)

    @boom.get("/boom")
    def _boom() -> None:
        raise RuntimeError("bug")

    @boom.get("/ok")
    def _ok() -> dict:
        return {"ok": True}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(boom, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):  # ends when the server closes the connection
                received += chunk
        ok, _, failure = received.partition(b"HTTP/1.1 500")
        assert ok.startswith(b"HTTP/1.1 200") and b'{"ok":true}' in ok  # the connection was kept alive
        head, _, body = failure.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower()
        assert b"application/problem+json" in head
        problem = json.loads(body)
        assert (
            problem["type"] == "internal-error"
            and problem["status"] == 500
            and problem["instance"] == "/boom"
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---- the worker scores an ONNX job like the CLI -----------------------------------------------------------
def test_an_onnx_job_scored_by_the_worker_equals_the_cli(
    app: FastAPI, client: TestClient, onnx_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process: the job submitted over HTTP, run by the worker's ``execute_job`` (the function a Celery
    worker calls), against ``gscore score --model`` (the CLI's ``main``) on the same file."""
    from gscore.cli.main import main
    from gscore.worker.execute import execute_job

    spec = {"dataset": "digits", "samples_per_class": 10, "measures": ["c1", "c2", "c3", "c4"], "seed": 3}
    response = post_file(client, "model", onnx_file.read_bytes(), spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert execute_job(job_id, app.state.context.settings, "inprocess-worker") == "succeeded"
    done = client.get(f"/v1/jobs/{job_id}").json()
    assert done["state"] == "succeeded", done["error"]
    argv = ["score", "--model", str(onnx_file), "--dataset", "digits", "--measures", "c1,c2,c3,c4"]
    argv += ["--samples-per-class", "10", "--seed", "3", "--device", "cpu", "--json", "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0
    expected = json.loads(capsys.readouterr().out)["scores"]
    assert set(expected) == {"c1", "c2", "c3", "c4"}
    for name, value in expected.items():
        served = done["result"]["scores"][name]
        assert served == pytest.approx(value, rel=1e-6, abs=1e-9) if value is not None else served is None
