"""Benchmark: what the submission-time checks of ``POST /v1/jobs`` cost the API process.

Prints, in one run (a fresh process, so the imports are counted):
  (a) resident memory after ``create_app`` (the API at start: torch not imported), and after the first
      submission, which imports torch through ``gscore.pipeline.validate_request`` (before this change too);
  (b) per arch, the time of ``expected_state_shapes`` (the model built on the ``meta`` device) and of the
      whole safetensors check (header read + comparison), median of 5, and the memory it adds;
  (c) the pickle opcode scan of a torch.save zip of the same model (median of 5);
  (d) the ONNX read (``read_onnx_file``: protobuf parse, external-data and operator checks, onnx.checker)
      of an exported torchvision ResNet-18 (median of 3).

    python benchmarks/bench_submission_checks.py
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

ARCHS = {
    "cnn (digits)": {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5},
    "vgg-13": {"family": "vgg", "depth": 13, "num_classes": 10},
    "wrn-26x48": {"family": "wrn", "depth": 26, "width": 48, "num_classes": 10},
    "torchvision resnet50": {"family": "torchvision", "name": "resnet50", "num_classes": 10},
}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    from fastapi.testclient import TestClient
    from test_routes_inprocess import inprocess_settings

    from gscore.service.app import create_app

    data_dir = Path(tempfile.mkdtemp())
    app = create_app(inprocess_settings(data_dir, max_upload_bytes=1 << 30), run_reaper=False)
    print(f"(a) RSS after create_app: {rss_mib():.0f} MiB (torch imported: {'torch' in sys.modules})")
    import torch

    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model

    digits = ARCHS["cnn (digits)"]
    checkpoint = data_dir / "digits.safetensors"
    save_safetensors(build_model(digits), checkpoint)
    spec = {"arch": digits, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
    with TestClient(app) as client:
        start = time.perf_counter()
        response = client.post(
            "/v1/jobs", data={"spec": json.dumps(spec)}, files={"checkpoint": ("c", checkpoint.read_bytes())}
        )
        first = time.perf_counter() - start
        assert response.status_code == 202, response.text
        start = time.perf_counter()
        client.post(
            "/v1/jobs",
            data={"spec": json.dumps({**spec, "seed": 1})},
            files={"checkpoint": ("c", checkpoint.read_bytes())},
        )
        second = time.perf_counter() - start
    print(
        f"    RSS after the first submission: {rss_mib():.0f} MiB (torch imported: {'torch' in sys.modules})"
    )
    print(f"    first submission {first * 1e3:.0f} ms (imports), second {second * 1e3:.0f} ms")

    from gscore.inputs.checkpoints.format import read_safetensors_shapes, refused_pickle_globals
    from gscore.inputs.checkpoints.preflight import (
        allowed_pickle_globals,
        expected_state_shapes,
        state_shapes_mismatch,
    )

    allowed = allowed_pickle_globals()
    print("(b) safetensors check per arch: meta build / full check (median), RSS added by the first build")
    print("(c) pickle opcode scan of torch.save(state_dict) (median)")
    for label, arch in ARCHS.items():
        torch.manual_seed(0)
        model = build_model(arch)
        path = data_dir / f"{label.replace(' ', '_')}.safetensors"
        save_safetensors(model, path)
        zipped = data_dir / f"{label.replace(' ', '_')}.pt"
        torch.save(model.state_dict(), zipped)
        del model
        before = rss_mib()
        expected_state_shapes(arch)
        added = rss_mib() - before
        build = median_ms(lambda arch=arch: expected_state_shapes(arch), 5)
        check = median_ms(
            lambda arch=arch, path=path: state_shapes_mismatch(
                read_safetensors_shapes(path), expected_state_shapes(arch)
            ),
            5,
        )
        scan = median_ms(lambda zipped=zipped: refused_pickle_globals(zipped, allowed), 5)
        size = path.stat().st_size / 2**20
        print(
            f"    {label:22s} {size:7.1f} MiB file: meta build {build:6.1f} ms, check {check:6.1f} ms, "
            f"+{added:5.1f} MiB RSS; pickle scan {scan:5.1f} ms"
        )

    from torchvision.models import resnet18

    from gscore.inputs.onnx_models import read_onnx_file

    onnx_path = data_dir / "resnet18.onnx"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(resnet18(num_classes=10).eval(), (torch.randn(1, 3, 32, 32),), buffer, dynamo=False)
    onnx_path.write_bytes(buffer.getvalue())
    read = median_ms(lambda: read_onnx_file(onnx_path, max_bytes=1 << 30), 3)
    print(
        f"(d) read_onnx_file of a ResNet-18 ({onnx_path.stat().st_size / 2**20:.1f} MiB): {read:.0f} ms (median of 3)"
    )


if __name__ == "__main__":
    main()
