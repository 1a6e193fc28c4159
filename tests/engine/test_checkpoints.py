"""Safe checkpoint loading: round trips, refused pickles (no code runs), corrupt files, mismatch messages."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gscore.errors import CheckpointError, CheckpointMismatchError
from gscore.inputs.checkpoints import loading as checkpoints
from gscore.inputs.checkpoints.loading import load_into, read_state_dict, save_safetensors, sha256_file


class TinyNet(nn.Module):
    def __init__(self, out_features: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.bn = nn.BatchNorm1d(5)
        self.fc2 = nn.Linear(5, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class CreatesFile:
    """Unpickling this calls open(marker, "w"): a file appears if the loader runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- round trips -------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = TinyNet()
    path = tmp_path / "model.safetensors"
    save_safetensors(model, path)
    assert_same(read_state_dict(path), model.state_dict())
    fresh = TinyNet()
    load_into(fresh, read_state_dict(path))
    assert_same(fresh.state_dict(), model.state_dict())


def test_safetensors_detected_without_suffix(tmp_path: Path) -> None:
    model = TinyNet()
    path = tmp_path / "upload-3f2a.bin"
    save_file(model.state_dict(), str(path))
    assert_same(read_state_dict(path), model.state_dict())


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "dataparallel"])
def test_torch_save_round_trip(tmp_path: Path, layout: str) -> None:
    model = TinyNet()
    state = model.state_dict()
    payload: object = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 7, "optimizer": {"lr": 0.1}},
        "model": {"model": state, "config": {"depth": 9}},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
    }[layout]
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    loaded = read_state_dict(path)
    fresh = TinyNet()
    report = load_into(fresh, loaded)
    assert report.removed_prefix == ("module." if layout == "dataparallel" else None)
    assert_same(fresh.state_dict(), state)


def test_torch_load_called_with_weights_only_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "load", spy)
    path = tmp_path / "model.pt"
    torch.save(TinyNet().state_dict(), path)
    read_state_dict(path)
    assert calls and calls[0]["weights_only"] is True


# ---- unsafe content is refused and never executed -------------------------------------------


def test_payload_really_runs_code_when_loaded_unsafely(tmp_path: Path) -> None:
    """Sanity check of the payload itself, so the safety tests below can fail."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(CreatesFile(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("payload_cls", [CreatesFile, RunsShell])
@pytest.mark.parametrize("writer", ["torch.save", "pickle", "torch.save-nested"])
@pytest.mark.parametrize("force_unsafe_env", [False, True])
def test_malicious_pickle_refused_without_side_effects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload_cls: type, writer: str, force_unsafe_env: bool
) -> None:
    if force_unsafe_env:  # must not turn off the explicit weights_only=True
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    payload = payload_cls(marker)
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    elif writer == "torch.save-nested":
        torch.save({"state_dict": {"w": torch.ones(1)}, "extra": payload}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


def test_pickled_module_refused_with_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(TinyNet(), path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert "pickled nn.Module" in info.value.detail
    assert "state_dict()" in info.value.detail and "safetensors" in info.value.detail


# ---- unreadable files --------------------------------------------------------------------------


def test_missing_empty_directory_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(empty)
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError):
        read_state_dict(garbage)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"hello, not safetensors")
    with pytest.raises(CheckpointError):
        read_state_dict(fake)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    if suffix == ".pt":
        torch.save(TinyNet().state_dict(), path)
    else:
        save_safetensors(TinyNet(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"fc.weight": torch.ones(2), "epoch": 3}, "'epoch' (int)"),
        ([torch.ones(2)], "list"),
        ({}, "no tensors"),
        (torch.ones(3), "Tensor"),
    ],
)
def test_non_state_dict_content_refused(tmp_path: Path, payload: object, fragment: str) -> None:
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert fragment in info.value.detail


# ---- strict loading ----------------------------------------------------------------------------


def test_mismatch_names_missing_unexpected_and_shapes() -> None:
    state = TinyNet(out_features=10).state_dict()
    del state["fc1.bias"]
    state["head.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointMismatchError) as info:
        load_into(TinyNet(out_features=3), state)
    detail = info.value.detail
    assert "1 missing key (fc1.bias)" in detail
    assert "1 unexpected key (head.weight)" in detail
    assert "fc2.weight: checkpoint [10, 5] vs model [3, 5]" in detail
    assert "fc2.bias: checkpoint [10] vs model [3]" in detail
    assert info.value.missing == ["fc1.bias"]


def test_mismatch_message_truncated_with_counts() -> None:
    model = nn.Sequential(*(nn.Linear(2, 2) for _ in range(20)))
    with pytest.raises(CheckpointMismatchError) as info:
        load_into(model, {"other.weight": torch.zeros(1)})
    detail = info.value.detail
    assert "40 missing keys" in detail and "and 35 more" in detail
    assert len(detail) < 600


def test_prefix_hint_and_missing_num_batches_tracked() -> None:
    state = TinyNet().state_dict()
    with pytest.raises(CheckpointMismatchError, match="prefix 'backbone.'"):  # not a wrapper prefix
        load_into(TinyNet(), {f"backbone.{k}": v for k, v in state.items()})
    del state["bn.num_batches_tracked"]
    load_into(TinyNet(), state)  # tolerated: old/converted checkpoints lack the counter


def test_save_handles_shared_tensors(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight  # tied
    path = tmp_path / "tied.safetensors"
    save_safetensors(model, path)
    loaded = read_state_dict(path)
    assert set(loaded) == set(model.state_dict())
    fresh = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    load_into(fresh, loaded)
    assert torch.equal(fresh[1].weight, model[0].weight)
    assert not list(tmp_path.glob("*.tmp"))


def test_sha256_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(10_000)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert checkpoints.sha256_file(path, chunk_size=7) == hashlib.sha256(data).hexdigest()


def test_torch_file_misnamed_safetensors_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, path)  # a torch.save zip under a .safetensors name
    with pytest.raises(CheckpointError, match=r"torch\.save\(\) archive; rename it to \.pt"):
        read_state_dict(path)
    path.write_bytes(b"\x00" * 64)  # plain garbage keeps the generic message
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_state_dict(path)


# ---- wrapper prefixes, Lightning checkpoints, torch.export archives ------------------------------


@pytest.mark.parametrize(
    "prefix", ["module.", "model.", "_orig_mod.", "net.", "_orig_mod.module.", "model.module."]
)
def test_wrapper_prefix_is_removed_and_reported(tmp_path: Path, prefix: str) -> None:
    source = TinyNet()
    path = tmp_path / "wrapped.pt"
    torch.save({f"{prefix}{k}": v for k, v in source.state_dict().items()}, path)
    fresh = TinyNet()
    report = load_into(fresh, read_state_dict(path))
    assert report.removed_prefix == prefix
    assert_same(fresh.state_dict(), source.state_dict())


class HoldsModel(nn.Module):
    """An architecture whose own keys start with 'model.': nothing may be stripped from them."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(2, 2)


def test_prefix_kept_when_keys_already_fit_and_mismatch_when_unprefixed_keys_do_not() -> None:
    source = HoldsModel()
    fresh = HoldsModel()
    assert load_into(fresh, source.state_dict()).removed_prefix is None
    assert torch.equal(fresh.model.weight, source.model.weight)
    # 'module.' stripped leaves fc1/bn/fc2 minus fc2: not exactly TinyNet's keys -> reported as stored
    state = {f"module.{k}": v for k, v in TinyNet().state_dict().items() if not k.startswith("fc2.")}
    with pytest.raises(CheckpointMismatchError, match="module.fc1.weight") as info:
        load_into(TinyNet(), state)
    assert "prefix 'module.'" in info.value.detail


def test_lightning_checkpoint_loads_with_weights_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = TinyNet()
    params = list(source.parameters())
    lightning_ckpt = {
        "epoch": 4,
        "global_step": 1250,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 5, "completed": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.31)}},
        "optimizer_states": [
            {
                "state": {
                    i: {"step": torch.tensor(1250.0), "exp_avg": torch.zeros_like(p)}
                    for i, p in enumerate(params)
                },
                "param_groups": [
                    {
                        "lr": 1e-3,
                        "betas": (0.9, 0.999),
                        "weight_decay": 0.0,
                        "params": list(range(len(params))),
                    }
                ],
            }
        ],
        "lr_schedulers": [{"step_size": 30, "gamma": 0.1, "base_lrs": [1e-3], "last_epoch": 4}],
        "hyper_parameters": {"lr": 1e-3, "depth": 2, "name": "tiny", "milestones": [30, 60]},
    }
    path = tmp_path / "epoch=4-step=1250.ckpt"
    torch.save(lightning_ckpt, path)
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "load", spy)
    fresh = TinyNet()
    report = load_into(fresh, read_state_dict(path))
    assert [call.get("weights_only") for call in calls] == [True]
    assert report.removed_prefix == "model."
    assert_same(fresh.state_dict(), source.state_dict())


def _crafted_pt2(path: Path, marker: Path) -> None:
    """A zip laid out like torch.export.save output whose pickles would create ``marker`` if loaded."""
    import zipfile

    payload = pickle.dumps(CreatesFile(marker), protocol=2)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/archive_format", b"pt2")
        archive.writestr("archive/archive_version", b"0")
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/data.pkl", payload)  # what torch.load would unpickle
        archive.writestr("archive/data/sample_inputs/model.pt", payload)
        archive.writestr("archive/models/model.json", b"{}")


@pytest.mark.parametrize("name", ["model.pt2", "renamed.pt", "no_suffix"])
def test_torch_export_archive_refused_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    _crafted_pt2(path, marker)

    def must_not_run(*args: object, **kwargs: object) -> object:
        raise AssertionError("a .pt2 archive reached a loader")

    monkeypatch.setattr(checkpoints.torch, "load", must_not_run)
    monkeypatch.setattr(torch.export, "load", must_not_run)
    with pytest.raises(CheckpointError, match=r"torch\.export archive \(\.pt2\).*ONNX"):
        read_state_dict(path)
    assert not marker.exists()


def test_real_torch_export_archive_refused_by_content(tmp_path: Path) -> None:
    program = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
    path = tmp_path / "exported.pt2"
    torch.export.save(program, path)
    renamed = path.rename(tmp_path / "weights.bin")
    with pytest.raises(CheckpointError, match="torch.export archive"):
        read_state_dict(renamed)
    # an ordinary torch.save zip is not mistaken for one
    plain = tmp_path / "plain.pt"
    torch.save(TinyNet().state_dict(), plain)
    assert not checkpoints.looks_like_torch_export_archive(plain)
    assert checkpoints.looks_like_torch_export_archive(renamed)
