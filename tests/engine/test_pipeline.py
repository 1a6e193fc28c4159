"""End-to-end engine tests: the `gscore score` CLI and the pipeline on real (small) data."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import reference_c1, reference_c2, reference_c3, reference_c4

from gscore.cli.main import main
from gscore.inputs.checkpoints.loading import save_safetensors
from gscore.measures.table import DEFAULT_MEASURES
from gscore.models import build_model
from gscore.pipeline import ScoreRequest, score, validate_request

CNN = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": 5}


def saved_model(path: Path, arch: dict) -> Path:
    """A randomly initialised (seed 0) model of ``arch`` saved as safetensors at ``path``."""
    torch.manual_seed(0)
    save_safetensors(build_model(arch), path)
    return path


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_model(tmp_path_factory.mktemp("ckpt") / "cnn.safetensors", CNN)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def score_cli(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, dataset: str = "digits", *options: str
) -> tuple[int, str, str]:
    """``gscore score CHECKPOINT --arch CNN --dataset DATASET --no-progress OPTIONS...`` in process."""
    argv = ["score", str(checkpoint), "--arch", json.dumps(CNN), "--dataset", dataset, "--no-progress"]
    return run_cli([*argv, *options], capsys)


def test_score_json_matches_reference_on_dumped_activations(cnn_checkpoint, tmp_path, capsys):
    dump = tmp_path / "acts.npz"
    # k = 10 for c1: with the default 30 >= this model's 16 neurons and two subclasses per superclass, c1 is
    # 0 by construction and reported undefined (tested in test_measure_status.py)
    code, out, _ = score_cli(
        capsys, cnn_checkpoint, "digits", "--json", "--dump-activations", str(dump), "--param", "c1.k=10"
    )
    assert code == 0
    result = json.loads(out)
    assert set(result["scores"]) == set(DEFAULT_MEASURES)  # c1-c4 and the cheap peer baselines
    meta = result["meta"]
    acts = np.load(dump)
    assert acts["pre"].dtype == np.float32
    n, m = acts["pre"].shape
    assert meta["samples"] == n == len(acts["y"]) == len(acts["sub"])
    assert meta["neurons"] == m == len(acts["layer_of"])
    assert meta["layers"] == len(acts["layer_names"]) == 2  # depth-2 CNN: two ReLU call sites
    assert set(meta["seconds"]) >= {"load", "extract", "measures", "total"}
    pre, layer_of, y, sub = acts["pre"], acts["layer_of"], acts["y"], acts["sub"]
    expected = {
        "c1": reference_c1(pre, y, sub, 10),
        "c2": reference_c2(pre, layer_of, y, sub, 5),
        "c3": reference_c3(pre, y, 30),
        "c4": reference_c4(pre, layer_of, y, 5),
    }
    for name, value in expected.items():
        assert result["scores"][name] == pytest.approx(float(value), abs=1e-6), name


def test_measure_parameters_are_applied(cnn_checkpoint):
    base = ScoreRequest(checkpoint=cnn_checkpoint, arch=CNN, dataset="digits", measures=["c3"], device="cpu")
    k1 = ScoreRequest(**{**base.__dict__, "params": {"c3": {"k": 1}}})
    default, top1 = score(base), score(k1)
    assert default["meta"]["parameters"]["c3"] == {"k": 30}
    assert top1["meta"]["parameters"]["c3"] == {"k": 1}
    # the mean of the single largest ratio is at least the mean of the top 30
    assert top1["scores"]["c3"] >= default["scores"]["c3"]


def test_samples_per_class_subset(cnn_checkpoint):
    result = score(
        ScoreRequest(
            checkpoint=cnn_checkpoint,
            arch=CNN,
            dataset="digits",
            measures=["c3"],
            samples_per_class=20,
            device="cpu",
        )
    )
    assert result["meta"]["samples"] == 5 * 20


def _write_npz(path: Path, with_sub: bool) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 8, 8, 1), dtype=np.uint8)  # NHWC, uint8
    y = np.repeat(np.arange(5), 12)
    arrays = {"x": x, "y": y}
    if with_sub:
        arrays["sub"] = y * 2 + (np.arange(60) % 2)
    np.savez(path, **arrays)
    return path


def test_default_measures_skip_hierarchy_ones_with_note(cnn_checkpoint, tmp_path, capsys):
    npz = _write_npz(tmp_path / "flat.npz", with_sub=False)
    code, out, _ = score_cli(capsys, cnn_checkpoint, str(npz), "--json")
    assert code == 0
    result = json.loads(out)
    assert set(result["scores"]) == set(DEFAULT_MEASURES) - {"c1", "c2"}
    assert any("c1 skipped" in note for note in result["meta"]["notes"])
    assert all(math.isfinite(result["scores"][name]) for name in ("c3", "c4", "margin", "param_norm"))


def test_explicit_hierarchy_measure_without_hierarchy_is_a_clear_error(cnn_checkpoint, tmp_path, capsys):
    npz = _write_npz(tmp_path / "flat.npz", with_sub=False)
    code, out, err = score_cli(capsys, cnn_checkpoint, str(npz), "--measures", "c1,c3")
    assert code == 2 and out == ""
    assert "c1" in err and "hierarchy" in err and "Traceback" not in err


def test_arch_from_file_and_table_output(cnn_checkpoint, tmp_path, capsys):
    spec = tmp_path / "arch.json"
    spec.write_text(json.dumps(CNN))
    code, out, _ = run_cli(
        [
            "score",
            str(cnn_checkpoint),
            "--arch",
            str(spec),
            "--dataset",
            "digits",
            "--measures",
            "c3,c4",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["measure", "value"]
    assert any(line.startswith("c3 ") for line in out.splitlines())
    assert "neurons" in out


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"--arch": '{"family": "vgg", "depth": 10, "width": 32, "num_classes": 5}'}, "depth"),
        ({"--arch": "{not json"}, "arch"),
        ({"--measures": "c9"}, "c9"),
        ({"--dataset": "imagenet"}, "imagenet"),
        ({"--param": "c1.q=3"}, "q"),
    ],
)
def test_bad_input_gives_clear_error_without_traceback(cnn_checkpoint, capsys, overrides, needle):
    options = {"--arch": json.dumps(CNN), "--dataset": "digits", **overrides}
    argv = [
        "score",
        str(cnn_checkpoint),
        "--no-progress",
        *[item for pair in options.items() for item in pair],
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err


def test_unsafe_or_mismatched_checkpoint(tmp_path, capsys):
    other = saved_model(tmp_path / "other.safetensors", {**CNN, "width": 4})
    code, _, err = score_cli(capsys, other)
    assert code == 2 and "shape" in err
    assert err.lower().count("does not match the architecture") == 1  # title not repeated by the detail

    pickled = tmp_path / "module.pt"
    torch.save(build_model(CNN), pickled)  # a whole pickled module: must be refused
    code, _, err = score_cli(capsys, pickled)
    assert code == 2 and "Traceback" not in err and "state_dict" in err


def test_validate_request_catches_problems_before_loading(cnn_checkpoint, tmp_path):
    from gscore.errors import DatasetError, SpecError

    ok = ScoreRequest(checkpoint=cnn_checkpoint, arch=CNN, dataset="digits")
    validate_request(ok)
    with pytest.raises(DatasetError, match="not installed"):
        validate_request(
            ScoreRequest(checkpoint=cnn_checkpoint, arch=CNN, dataset="cifar10", data_dir=tmp_path)
        )
    with pytest.raises(SpecError) as info:
        validate_request(ScoreRequest(checkpoint=cnn_checkpoint, arch=CNN, dataset="digits", split="val"))
    assert info.value.field == "split"


def test_cifar100_coarse_through_the_real_loader(tmp_path):
    from tests.cifar_files import write_cifar100

    write_cifar100(tmp_path, n_train=200, n_test=100)
    arch = {"family": "vgg", "depth": 9, "width": 32, "num_classes": 20}
    ckpt = saved_model(tmp_path / "vgg9.safetensors", arch)
    result = score(
        ScoreRequest(
            checkpoint=ckpt,
            arch=arch,
            dataset="cifar100-coarse",
            data_dir=tmp_path,
            device="cpu",
            batch_size=64,
        )
    )
    assert set(result["scores"]) == set(DEFAULT_MEASURES)
    assert result["meta"]["samples"] == 200 and result["meta"]["classes"] == 20
    assert result["meta"]["layers"] == 8  # VGG-9: eight conv-BN-ReLU layers
    assert all(math.isfinite(result["scores"][name]) for name in ("c1", "c2", "c3", "c4", "param_norm"))
    assert result["meta"]["batchnorm_folding"] == "8 folded"


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "gscore.cli", "score", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--dump-activations" in out.stdout


def test_demo_trains_and_scores(tmp_path):
    import io

    from gscore.demo import run_demo

    log = io.StringIO()
    result = run_demo(tmp_path, epochs=15, log=log)
    assert (tmp_path / "demo-cnn.safetensors").is_file()
    assert result["meta"]["train_accuracy"] > 0.95
    assert result["meta"]["test_accuracy"] > 0.8
    assert set(result["scores"]) == set(DEFAULT_MEASURES)
    # the hint prints a command that runs as written, and gives the same scores
    hint = next(line.strip() for line in log.getvalue().splitlines() if " score " in line)
    done = subprocess.run([*shlex.split(hint), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (hint, done.stderr)
    assert json.loads(done.stdout)["scores"] == pytest.approx(result["scores"])


def test_sharpness_measures_through_the_pipeline(cnn_checkpoint):
    request = ScoreRequest(
        checkpoint=cnn_checkpoint,
        arch=CNN,
        dataset="digits",
        measures=["random_sharpness", "worst_sharpness_kernels"],
        params={
            "random_sharpness": {"samples": 200, "steps": 4, "draws": 3},
            "worst_sharpness_kernels": {"steps": 3},
        },
        device="cpu",
    )
    stages: list[tuple[str, int, int]] = []
    first = score(request, progress=lambda *p: stages.append(p))
    again = score(request)
    assert first["scores"] == again["scores"]  # same seed, same device: same numbers
    details = first["meta"]["sharpness"]
    assert set(first["scores"]) == set(details) == {"random_sharpness", "worst_sharpness_kernels"}
    for name, detail in details.items():
        assert first["scores"][name] == pytest.approx(1 / detail["scale"])
        assert detail["steps"] <= request.params[name]["steps"]
    assert details["random_sharpness"]["samples"] == 200  # 40 per class x 5 classes
    assert details["random_sharpness"]["parameters"]["draws"] == 3
    assert all(isinstance(d["diagnostics"]["converged"], bool) for d in details.values())
    json.dumps(first, allow_nan=False)  # the stored result is plain JSON
    reported = [(done, total) for stage, done, total in stages if stage == "random_sharpness"]
    assert (
        reported and reported[-1][0] == reported[-1][1] and reported[-1][1] <= 4
    )  # "step i of n", ends at n
    assert "neurons" not in first["meta"]  # no activation measure ran


def test_sharpness_parameters_are_validated(cnn_checkpoint):
    from gscore.errors import SpecError

    for params, field in [
        ({"random_sharpness": {"seed": 2**64}}, "params.random_sharpness.seed"),
        ({"random_sharpness": {"draws": 0}}, "params.random_sharpness.draws"),
    ]:
        with pytest.raises(SpecError) as info:
            validate_request(
                ScoreRequest(
                    checkpoint=cnn_checkpoint,
                    arch=CNN,
                    dataset="digits",
                    params=params,
                    measures=["random_sharpness"],
                )
            )
        assert info.value.field == field
    bad = {"random_sharpness": {"upper": -1.0}}
    with pytest.raises(SpecError) as info:
        validate_request(
            ScoreRequest(
                checkpoint=cnn_checkpoint,
                arch=CNN,
                dataset="digits",
                measures=["random_sharpness"],
                params=bad,
            )
        )
    assert info.value.field == "params.random_sharpness.upper"


def _error_without_traceback(capsys, checkpoint, dataset, *options, arch=CNN) -> str:
    argv = ["score", str(checkpoint), "--arch", json.dumps(arch), "--dataset", dataset, "--no-progress"]
    code, out, err = run_cli([*argv, *options], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    return err


def test_non_positive_batch_size_is_a_clear_error(cnn_checkpoint, capsys):
    err = _error_without_traceback(capsys, cnn_checkpoint, "digits", "--batch-size", "0")
    assert "batch_size must be a positive integer" in err


def test_model_that_cannot_take_the_dataset_inputs_is_a_clear_error(tmp_path, capsys):
    rgb = {**CNN, "in_channels": 3}
    ckpt = saved_model(tmp_path / "rgb.safetensors", rgb)
    err = _error_without_traceback(capsys, ckpt, "digits", arch=rgb)
    assert "3 input channel(s)" in err and "[1, 8, 8]" in err

    mlp = {"family": "mlp", "in_features": 48, "hidden": [8], "num_classes": 5}
    ckpt = saved_model(tmp_path / "mlp.safetensors", mlp)
    err = _error_without_traceback(capsys, ckpt, "digits", arch=mlp)
    assert "cannot run on" in err and "[1, 8, 8]" in err


def test_model_with_fewer_outputs_than_dataset_classes_is_a_clear_error(tmp_path, capsys):
    three = {**CNN, "num_classes": 3}
    ckpt = saved_model(tmp_path / "three.safetensors", three)
    err = _error_without_traceback(capsys, ckpt, "digits", arch=three)
    assert "3 outputs" in err and "5 classes" in err


def test_dump_activations_problems_are_caught_before_scoring(cnn_checkpoint, tmp_path, capsys, monkeypatch):
    import gscore.pipeline

    calls: list[object] = []
    monkeypatch.setattr(gscore.pipeline, "run", lambda *args, **kwargs: calls.append(args))
    missing_dir = str(tmp_path / "no" / "acts.npz")
    err = _error_without_traceback(capsys, cnn_checkpoint, "digits", "--dump-activations", missing_dir)
    assert "no such directory" in err
    sharpness_only = ["--measures", "random_sharpness", "--dump-activations", str(tmp_path / "a.npz")]
    err = _error_without_traceback(capsys, cnn_checkpoint, "digits", *sharpness_only)
    assert "c1-c4" in err
    assert calls == []  # refused before scoring: no computed scores are thrown away


def test_dump_activations_writes_exactly_the_given_path(cnn_checkpoint, tmp_path, capsys):
    target = tmp_path / "acts.bin"
    code, out, _ = score_cli(
        capsys, cnn_checkpoint, "digits", "--measures", "c3", "--dump-activations", str(target)
    )
    assert code == 0 and "c3" in out
    assert sorted(np.load(target).files) == ["layer_names", "layer_of", "pre", "sub", "y"]
    assert not (tmp_path / "acts.bin.npz").exists()


def test_missing_cifar_names_the_expected_files(cnn_checkpoint, tmp_path, capsys):
    err = _error_without_traceback(capsys, cnn_checkpoint, "cifar10", "--data-dir", str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in err
    assert "cifar-10-python.tar.gz" in err and "{" not in err


def test_demo_bad_output_directory_or_epochs_is_a_clear_error(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    code, out, err = run_cli(["demo", "--out", str(a_file)], capsys)
    assert code == 2 and out == "" and "Traceback" not in err and str(a_file) in err
    code, out, err = run_cli(["demo", "--out", str(tmp_path / "d"), "--epochs", "0"], capsys)
    assert code == 2 and out == "" and "epochs must be a positive integer" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("device", "needle"), [("tpu", "must be one of auto, cpu, cuda"), ("cuda:0", "no CUDA")]
)
def test_unusable_device_is_a_clear_error(cnn_checkpoint, capsys, device, needle):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, out, err = score_cli(capsys, cnn_checkpoint, "digits", "--device", device)
    assert code == 2 and out == "" and needle in err and "Traceback" not in err


def test_a_wrapper_prefix_is_removed_and_reported(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model(CNN)
    wrapped = tmp_path / "ddp.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(wrapped))
    plain = saved_model(tmp_path / "plain.safetensors", CNN)
    common = dict(arch=CNN, dataset="digits", measures=["c3"], samples_per_class=10, device="cpu")
    from_wrapped = score(ScoreRequest(checkpoint=wrapped, **common))
    from_plain = score(ScoreRequest(checkpoint=plain, **common))
    assert from_wrapped["meta"]["checkpoint_prefix_removed"] == "module."
    assert "checkpoint_prefix_removed" not in from_plain["meta"]
    assert from_wrapped["scores"] == from_plain["scores"]
