"""Decompression bombs and lying headers are refused before anything is inflated, at upload (in-process
API, ``gscore.service.app.create_app``) and in the worker (its readers called directly), with the process's peak
RSS measured around each check (``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs).

The bombs are built without inflating them: a deflate stream of zeros is a block repeated after each full
flush (the compressor's state resets there), so a 1 MB file that inflates to 1.1 GiB takes milliseconds.
The checks here run in the test process (``upload_check_processes=0``); one case goes through the API's
process pool to show its refusal crosses the process boundary intact.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import DIGITS_ARCH, assert_problem
from fastapi.testclient import TestClient
from test_routes_inprocess import inprocess_settings

from gscore.errors import CheckpointError, DatasetError
from gscore.inputs.archives import CheckpointTooLarge, DatasetTooLarge, check_input_archives
from gscore.service.app import create_app

GIB = 1 << 30
RSS_GROWTH_LIMIT = 200 * 1024 * 1024
BLOCK = 1 << 20
SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}


# -- building bombs ------------------------------------------------------------------------------------


def _deflated(head: bytes, zeros: int) -> bytes:
    """Raw deflate of ``head`` followed by ``zeros`` zero bytes, built from one repeated block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)]
    blocks, rest = divmod(zeros, BLOCK)
    if blocks:
        block = compressor.compress(bytes(BLOCK)) + compressor.flush(zlib.Z_FULL_FLUSH)
        out.append(block * blocks)
    out.append(compressor.compress(bytes(rest)) + compressor.flush())
    return b"".join(out)


def write_zip(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """A zip of ``(name, head, zeros)`` members: ``head`` then ``zeros`` zero bytes, deflated when
    ``zeros`` is set (stored otherwise). Sizes are true; a deflated member's CRC is left 0 (no reader here
    gets that far)."""
    local, central = io.BytesIO(), io.BytesIO()
    for name, head, zeros in members:
        data, method = (_deflated(head, zeros), 8) if zeros else (head, 0)
        crc = 0 if zeros else zlib.crc32(head)
        size, encoded = len(head) + zeros, name.encode()
        offset = local.tell()
        local.write(
            struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(encoded), 0
            )
        )
        local.write(encoded + data)
        central.write(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    directory = central.getvalue()
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), local.tell(), 0
    )
    path.write_bytes(local.getvalue() + directory + end)
    return path


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version 1.0 ``.npy`` header declaring ``shape`` (no data)."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


LABELS = [("y.npy", npy_bytes(np.zeros(4, dtype=np.int64)), 0)]


def inflating_npz(path: Path) -> Path:
    """1.1 MB that inflates to 1.1 GiB: 1.15 M digits-sized images of zeros."""
    shape = (1_150_000, 1, 32, 32)
    return write_zip(path, [("x.npy", npy_header(shape), int(np.prod(shape))), *LABELS])


def huge_images_npz(path: Path) -> Path:
    """0.8 MB of four 3 x 8192 x 8192 images (805 MB inflated)."""
    shape = (4, 3, 8192, 8192)
    return write_zip(path, [("x.npy", npy_header(shape), int(np.prod(shape))), *LABELS])


def lying_header_npz(path: Path) -> Path:
    """A few hundred bytes whose x declares (2^40, 1, 8, 8) uint8 (64 TiB) and holds nothing."""
    return write_zip(path, [("x.npy", npy_header((2**40, 1, 8, 8)), 0), *LABELS])


def deflated_torch_zip(path: Path) -> Path:
    """A torch.save archive of {"w": a 1.1 GiB float32 tensor} whose data record is deflated zeros."""
    import torch

    numel = (GIB + GIB // 10) // 4
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    members = []
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename.endswith("data.pkl"):  # the pickle declares the big storage
                data = data.replace(struct.pack("<I", 4), struct.pack("<I", numel), 1)
            if info.filename.endswith("/data/0"):
                members.append((info.filename, b"", numel * 4))
            else:
                members.append((info.filename, data, 0))
    return write_zip(path, members)


def inflating_onnx(path: Path) -> Path:
    """An ONNX classifier whose weight initializer declares [2^24, 64] float32 (4 GiB) and stores 8 bytes."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**24, 64], raw_data=b"\x00" * 8)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)],
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2**24])],
        initializer=[weight],
    )
    onnx.save_model(helper.make_model(graph), path)
    return path


# -- measuring -----------------------------------------------------------------------------------------


def peak_rss_growth(action: Callable[[], object]) -> int:
    """Bytes by which this process's peak RSS rose above its RSS at the start of ``action()``."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux /proc to reset and read the peak RSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS

    def read(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1]) * 1024

    start = read("VmRSS:")
    action()
    return read("VmHWM:") - start


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = inprocess_settings(
        tmp_path_factory.mktemp("bombs"), max_upload_bytes=4 * 1024 * 1024, upload_check_processes=0
    )
    with TestClient(create_app(settings, run_reaper=False)) as test_client:
        yield test_client


def post_dataset(client: TestClient, path: Path) -> object:
    with path.open("rb") as handle:
        return client.post("/v1/datasets", files={"file": (path.name, handle)}, data={"name": path.stem})


def post_checkpoint(
    client: TestClient, path: Path, field: str = "checkpoint", spec: dict | None = None
) -> object:
    with path.open("rb") as handle:
        return client.post(
            "/v1/jobs", data={"spec": json.dumps(spec or SPEC)}, files={field: (path.name, handle)}
        )


# -- datasets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "status", "type_", "named"),
    [
        (inflating_npz, 413, "dataset-too-large", "'x.npy' is 1177600128 bytes"),
        (huge_images_npz, 413, "dataset-too-large", "'x.npy' is 805306496 bytes"),
        (lying_header_npz, 422, "invalid-dataset", "declares shape (1099511627776, 1, 8, 8)"),
    ],
    ids=["inflates-to-1.1GiB", "4x3x8192x8192-images", "declares-2^40-images"],
)
def test_dataset_bombs_are_refused_at_upload_and_in_the_worker(
    client: TestClient,
    tmp_path: Path,
    digits_checkpoint: Path,
    build: Callable[[Path], Path],
    status: int,
    type_: str,
    named: str,
) -> None:
    checkpoint = digits_checkpoint
    from gscore.inputs.datasets import read_npz_probe_set

    bomb = build(tmp_path / "bomb.npz")
    assert bomb.stat().st_size < 1_300_000
    responses = []
    assert peak_rss_growth(lambda: responses.append(post_dataset(client, bomb))) < RSS_GROWTH_LIMIT
    assert named in assert_problem(responses[0], status, type_)["detail"]
    assert client.get("/v1/datasets").json()["datasets"][-1]["name"] != "bomb"  # nothing was stored

    expected = DatasetTooLarge if status == 413 else DatasetError
    errors = []

    def worker_reads() -> None:
        if status == 413:  # the worker's check of the stored files, before the engine opens them
            with pytest.raises(DatasetTooLarge):
                check_input_archives(checkpoint, bomb, max_checkpoint_bytes=GIB, max_dataset_bytes=512 << 20)
        with pytest.raises(expected) as caught:
            read_npz_probe_set(bomb, name="bomb.npz", max_bytes=512 * 1024 * 1024)
        errors.append(caught.value)

    assert peak_rss_growth(worker_reads) < RSS_GROWTH_LIMIT
    assert named in errors[0].detail


def test_an_array_numpy_cannot_allocate_is_a_422(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy's MemoryError (its _ArrayMemoryError) for an allocation is bad input, never a 500."""
    import gscore.inputs.archives

    def no_memory(*_: object, **__: object) -> np.ndarray:
        raise MemoryError("Unable to allocate 64. TiB for an array with shape (70368744177664,)")

    monkeypatch.setattr(gscore.inputs.archives.np, "empty", no_memory)
    images = npy_bytes(np.zeros((4, 1, 8, 8), dtype=np.uint8))
    path = write_zip(tmp_path / "fine.npz", [("x.npy", images, 0), *LABELS])
    problem = assert_problem(post_dataset(client, path), 422, "invalid-dataset")
    assert "cannot be allocated" in problem["detail"]


# -- checkpoints and ONNX models -------------------------------------------------------------------------


def test_a_deflated_torch_record_is_refused_before_torch_load(client: TestClient, tmp_path: Path) -> None:
    from gscore.inputs.checkpoints.loading import read_state_dict

    bomb = deflated_torch_zip(tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 1_300_000
    responses = []
    assert peak_rss_growth(lambda: responses.append(post_checkpoint(client, bomb))) < RSS_GROWTH_LIMIT
    problem = assert_problem(responses[0], 413, "checkpoint-too-large")
    assert "archive/data/0" in problem["detail"] and "1181116004 bytes" in problem["detail"]
    assert client.get("/v1/jobs").json()["jobs"] == []

    def worker_reads() -> None:
        with pytest.raises(CheckpointTooLarge, match="archive/data/0"):
            check_input_archives(bomb, None, max_checkpoint_bytes=GIB, max_dataset_bytes=GIB)
        with pytest.raises(CheckpointTooLarge, match="archive/data/0"):
            read_state_dict(bomb, max_bytes=GIB)

    assert peak_rss_growth(worker_reads) < RSS_GROWTH_LIMIT


def test_an_onnx_model_whose_initializers_inflate_is_refused(client: TestClient, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from gscore.inputs.onnx_models import read_onnx_file

    bomb = inflating_onnx(tmp_path / "bomb.onnx")
    responses = []
    spec = {"dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
    growth = peak_rss_growth(lambda: responses.append(post_checkpoint(client, bomb, "model", spec)))
    assert growth < RSS_GROWTH_LIMIT
    problem = assert_problem(responses[0], 422, "invalid-checkpoint")
    assert "initializer 'W' declares shape [16777216, 64]" in problem["detail"]

    def worker_reads() -> None:
        with pytest.raises(CheckpointError, match="initializer 'W'"):
            read_onnx_file(bomb, max_bytes=GIB)

    assert peak_rss_growth(worker_reads) < RSS_GROWTH_LIMIT


def test_declared_onnx_tensors_over_the_checkpoint_cap_are_a_413(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper

    from gscore.inputs.onnx_models import read_onnx_file

    weight = helper.make_tensor("W", TensorProto.FLOAT, [2, 64], vals=[0.0] * 128)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[weight],
    )
    path = tmp_path / "small.onnx"
    onnx.save_model(helper.make_model(graph), path)
    read_onnx_file(path, max_bytes=GIB, max_tensor_bytes=512)  # 2 x 64 float32 = 512 bytes: fits
    with pytest.raises(CheckpointTooLarge, match="512 bytes in all, over the limit of 511"):
        read_onnx_file(path, max_bytes=GIB, max_tensor_bytes=511)


def test_a_safetensors_header_over_the_cap_is_refused_before_parsing(
    client: TestClient, tmp_path: Path
) -> None:
    from gscore.inputs.checkpoints.format import MAX_SAFETENSORS_HEADER

    header_length = MAX_SAFETENSORS_HEADER + 1
    path = tmp_path / "big-header.safetensors"
    path.write_bytes(struct.pack("<Q", header_length) + b"{" + b" " * 100)
    with path.open("r+b") as handle:  # sparse: the size the header claims, without writing it
        handle.truncate(8 + header_length + 16)
    client.app.state.context.settings.max_upload_bytes = 16 * 1024 * 1024
    try:
        problem = assert_problem(post_checkpoint(client, path), 422, "invalid-checkpoint")
    finally:
        client.app.state.context.settings.max_upload_bytes = 4 * 1024 * 1024
    assert f"header is {header_length} bytes, over the limit" in problem["detail"]


def test_refusals_cross_the_check_pool_intact(tmp_path: Path) -> None:
    """With the default process pool the same bomb is the same 413 (the refusal is pickled back)."""
    settings = inprocess_settings(
        tmp_path / "pool", max_upload_bytes=4 * 1024 * 1024, upload_check_processes=1
    )
    bomb = inflating_npz(tmp_path / "bomb.npz")
    with TestClient(create_app(settings, run_reaper=False)) as pooled:
        problem = assert_problem(post_dataset(pooled, bomb), 413, "dataset-too-large")
        assert "'x.npy' is 1177600128 bytes" in problem["detail"]
