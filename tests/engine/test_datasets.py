"""Probe sets: digits, CIFAR through torchvision's real loader (tiny files in the real format), .npz files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_files import (
    CIFAR10_TRAIN_FILES,
    CIFAR100_COARSE_OF_FINE,
    cifar10_entries,
    cifar100_entries,
    write_cifar10,
    write_cifar100,
)

from gscore.errors import DatasetError
from gscore.inputs.datasets import (
    BUILTIN_DATASET_NAMES,
    CIFAR10_NORMALIZATION,
    CIFAR100_NORMALIZATION,
    DEFAULT_DATASETS_DIR,
    ProbeSet,
    balanced_subset,
    builtin_datasets,
    load_probe_set,
    read_npz_probe_set,
)
from gscore.settings import get_settings

# ------------------------------------------------------------------------------------------------ digits

DIGIT_TO_SUPERCLASS = {0: 0, 6: 0, 1: 1, 7: 1, 2: 2, 5: 2, 3: 3, 8: 3, 4: 4, 9: 4}


def test_digits_shapes_ranges_and_grouping() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load_probe_set("digits", "train"), load_probe_set("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    for probe in (train, test):
        assert probe.x.dtype == torch.float32 and probe.x.shape[1:] == (1, 8, 8)
        assert probe.y.dtype == torch.int64 and probe.sub is not None and probe.sub.dtype == torch.int64
        assert probe.x.min() == 0.0 and probe.x.max() == 1.0
        assert probe.num_classes == 5 and probe.has_hierarchy and probe.default_normalization is None
        assert set(probe.y.tolist()) == set(range(5)) and set(probe.sub.tolist()) == set(range(10))
        # the documented grouping, sample by sample
        assert probe.y.tolist() == [DIGIT_TO_SUPERCLASS[d] for d in probe.sub.tolist()]
        # nesting: each digit occurs with exactly one superclass
        for digit in range(10):
            assert len(set(probe.y[probe.sub == digit].tolist())) == 1
    assert (train.x.sum() + test.x.sum()).item() == pytest.approx(bunch.images.sum() / 16, rel=1e-6)


def test_digits_split_is_the_documented_stratified_split() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    train_index, test_index = train_test_split(
        np.arange(1797), test_size=0.25, random_state=0, stratify=bunch.target
    )
    assert sorted([*train_index, *test_index]) == list(range(1797))
    for split, index in (("train", np.sort(train_index)), ("test", np.sort(test_index))):
        probe = load_probe_set("digits", split)
        np.testing.assert_array_equal(probe.sub.numpy(), bunch.target[index])
        np.testing.assert_array_equal(probe.x.numpy()[:, 0], (bunch.images[index] / 16).astype(np.float32))
    test_counts = np.bincount(load_probe_set("digits", "test").sub.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * np.bincount(bunch.target)) <= 1)  # stratified


def test_digits_returns_independent_tensors() -> None:
    first = load_probe_set("digits")
    first.x.zero_()
    first.sub.zero_()
    second = load_probe_set("digits")
    assert second.x.max() == 1.0 and second.sub.max() == 9


# ------------------------------------------------------------------------------------------------- CIFAR


def test_cifar_files_are_python2_pickles_like_the_real_archives(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_per_batch=10)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}q\x00(U") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    as_bytes = pickle.loads(raw, encoding="bytes")  # the CIFAR page's snippet
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (10, 3072)
    as_latin1 = pickle.loads(raw, encoding="latin1")  # what torchvision does
    assert set(as_latin1) == {"batch_label", "labels", "data", "filenames"}


def test_cifar10_loads_through_torchvision_with_right_pixels_and_labels(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path, n_per_batch=20, seed=3)
    entries = cifar10_entries(n_per_batch=20, seed=3)
    train = load_probe_set("cifar10", "train", data_dir=root)
    assert train.x.dtype == torch.uint8 and train.x.shape == (100, 3, 32, 32)
    assert train.x.is_contiguous()
    data = np.concatenate([entries[f][b"data"] for f in CIFAR10_TRAIN_FILES])
    labels = sum((entries[f][b"labels"] for f in CIFAR10_TRAIN_FILES), [])
    assert train.y.dtype == torch.int64 and train.y.tolist() == labels
    # each row is 1024 red, 1024 green, 1024 blue values, row-major 32x32
    rng = np.random.default_rng(0)
    for sample, channel, row, col in rng.integers(0, [100, 3, 32, 32], size=(50, 4)):
        assert train.x[sample, channel, row, col] == data[sample, channel * 1024 + row * 32 + col]
    np.testing.assert_array_equal(train.x.numpy(), data.reshape(100, 3, 32, 32))
    assert train.sub is None and not train.has_hierarchy
    assert train.num_classes == 10 and train.default_normalization == CIFAR10_NORMALIZATION

    test = load_probe_set("cifar10", "test", data_dir=root)
    np.testing.assert_array_equal(test.x.numpy(), entries["test_batch"][b"data"].reshape(20, 3, 32, 32))
    assert test.y.tolist() == entries["test_batch"][b"labels"]


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path, n_train=200, n_test=100, seed=1)
    entries = cifar100_entries(n_train=200, n_test=100, seed=1)
    for split, n_samples in (("train", 200), ("test", 100)):
        entry = entries[split]
        fine = load_probe_set("cifar100", split, data_dir=root)
        coarse = load_probe_set("cifar100-coarse", split, data_dir=root)
        expected_x = entry[b"data"].reshape(n_samples, 3, 32, 32)
        np.testing.assert_array_equal(fine.x.numpy(), expected_x)
        np.testing.assert_array_equal(coarse.x.numpy(), expected_x)
        assert fine.y.tolist() == entry[b"fine_labels"] and fine.sub is None and fine.num_classes == 100
        assert coarse.y.tolist() == entry[b"coarse_labels"] and coarse.num_classes == 20
        assert coarse.sub is not None and coarse.sub.tolist() == entry[b"fine_labels"]
        assert coarse.y.tolist() == [CIFAR100_COARSE_OF_FINE[f] for f in coarse.sub.tolist()]
        assert coarse.has_hierarchy and coarse.split == split
        assert fine.default_normalization == coarse.default_normalization == CIFAR100_NORMALIZATION


def test_missing_cifar_files_error_names_files_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        load_probe_set("cifar10", data_dir=tmp_path)
    message = raised.value.detail
    assert "cifar10 is not installed" in message
    for file_name in (*CIFAR10_TRAIN_FILES, "test_batch", "batches.meta"):
        assert str(tmp_path / "cifar-10-batches-py" / file_name) in message
    assert "cifar-10-python.tar.gz" in message and f"into {tmp_path}" in message

    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(DatasetError, match="cifar100-coarse is not installed") as raised:
        load_probe_set("cifar100-coarse", "train", data_dir=tmp_path)
    assert str(tmp_path / "cifar-100-python" / "test") in raised.value.detail
    assert "cifar-100-python/train" not in raised.value.detail


def test_corrupt_cifar_file_is_a_dataset_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_per_batch=10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="unreadable"):
        load_probe_set("cifar10", data_dir=tmp_path)


def test_the_engine_reads_no_settings_its_default_folder_is_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's default data folder is ./gscore-data/datasets whatever GSCORE_* says (a notebook call
    does not depend on the environment); the CLI passes GSCORE_DATASETS_DIR (tests/engine/test_pipeline.py)."""
    monkeypatch.chdir(tmp_path)
    write_cifar10(tmp_path / "gscore-data" / "datasets", n_per_batch=10)
    monkeypatch.setenv("GSCORE_DATASETS_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    try:
        assert DEFAULT_DATASETS_DIR == Path("gscore-data") / "datasets"
        assert len(load_probe_set("cifar10", "test")) == 10
        assert {d["name"]: d["installed"] for d in builtin_datasets()}["cifar10"]
    finally:
        get_settings.cache_clear()


def test_builtin_datasets_catalogue(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    entries = {entry["name"]: entry for entry in builtin_datasets(tmp_path)}
    assert tuple(entries) == BUILTIN_DATASET_NAMES
    assert not entries["cifar10"]["installed"]
    assert entries["cifar100"]["installed"] and entries["cifar100-coarse"]["installed"]
    assert entries["cifar10"]["where"]["directory"] == str(tmp_path)
    assert "cifar-10-batches-py/data_batch_1" in entries["cifar10"]["where"]["files"]
    assert (entries["cifar100-coarse"]["classes"], entries["cifar100-coarse"]["subclasses"]) == (20, 100)
    assert entries["cifar100-coarse"]["hierarchy"] and not entries["cifar100"]["hierarchy"]
    assert entries["cifar100"]["subclasses"] is None
    digits = entries["digits"]
    assert (
        digits["installed"] and digits["hierarchy"] and (digits["classes"], digits["subclasses"]) == (5, 10)
    )
    assert "0={0,6}, 1={1,7}, 2={2,5}, 3={3,8}, 4={4,9}" in digits["description"]
    for entry in entries.values():
        assert entry["splits"] == ["train", "test"]


# --------------------------------------------------------------------------------------------------- npz


def _labels(n_samples: int, num_classes: int = 3) -> np.ndarray:
    return np.arange(n_samples) % num_classes


def test_npz_nchw_uint8(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(6, 3, 4, 5), dtype=np.uint8)
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=_labels(6))
    probe = load_probe_set(str(path))
    assert probe.x.dtype == torch.uint8 and probe.x.shape == (6, 3, 4, 5)
    np.testing.assert_array_equal(probe.x.numpy(), x)
    assert probe.y.tolist() == [0, 1, 2, 0, 1, 2] and probe.num_classes == 3
    assert probe.sub is None and probe.default_normalization is None and probe.name == "set.npz"


def test_npz_nhwc_and_grayscale_layouts(tmp_path: Path) -> None:
    nhwc = np.random.default_rng(1).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", x=nhwc, y=_labels(4))
    probe = read_npz_probe_set(tmp_path / "nhwc.npz")
    assert probe.x.shape == (4, 3, 5, 6)
    assert probe.x[2, 1, 4, 3] == nhwc[2, 4, 3, 1]
    np.testing.assert_array_equal(probe.x.numpy(), nhwc.transpose(0, 3, 1, 2))

    nhwc_gray = np.random.default_rng(2).random((4, 5, 6, 1))
    np.savez(tmp_path / "gray4.npz", x=nhwc_gray, y=_labels(4))
    assert read_npz_probe_set(tmp_path / "gray4.npz").x.shape == (4, 1, 5, 6)

    gray = np.random.default_rng(3).random((4, 7, 7)).astype(np.float32)
    np.savez(tmp_path / "gray3.npz", x=gray, y=_labels(4))
    probe = read_npz_probe_set(tmp_path / "gray3.npz")
    assert probe.x.shape == (4, 1, 7, 7)
    np.testing.assert_array_equal(probe.x.numpy()[:, 0], gray)


def test_npz_float_used_as_is_and_nonfinite_refused(tmp_path: Path) -> None:
    x = np.random.default_rng(4).normal(size=(5, 1, 3, 3))  # float64, negative values allowed
    np.savez(tmp_path / "f.npz", x=x, y=_labels(5))
    probe = read_npz_probe_set(tmp_path / "f.npz")
    assert probe.x.dtype == torch.float32
    np.testing.assert_allclose(next(probe.batches(10)).numpy(), x.astype(np.float32))
    x[3, 0, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=_labels(5))
    with pytest.raises(DatasetError, match="NaN or infinite"):
        read_npz_probe_set(tmp_path / "nan.npz")
    np.savez(tmp_path / "huge.npz", x=np.full((2, 1, 2, 2), 1e300), y=_labels(2))
    with pytest.raises(DatasetError, match="NaN or infinite"):
        read_npz_probe_set(tmp_path / "huge.npz")


def test_npz_bad_dtypes_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "int_x.npz", x=np.zeros((2, 1, 2, 2), dtype=np.int64), y=_labels(2))
    with pytest.raises(DatasetError, match="dtype int64; use uint8"):
        read_npz_probe_set(tmp_path / "int_x.npz")
    np.savez(tmp_path / "float_y.npz", x=np.zeros((2, 1, 2, 2)), y=np.array([0.0, 1.0]))
    with pytest.raises(DatasetError, match="integer labels"):
        read_npz_probe_set(tmp_path / "float_y.npz")
    np.savez(tmp_path / "neg_y.npz", x=np.zeros((2, 1, 2, 2)), y=np.array([0, -1]))
    with pytest.raises(DatasetError, match=">= 0, found -1"):
        read_npz_probe_set(tmp_path / "neg_y.npz")


def test_npz_sub_must_nest_in_y(tmp_path: Path) -> None:
    x = np.zeros((6, 1, 2, 2), dtype=np.float32)
    np.savez(tmp_path / "ok.npz", x=x, y=np.array([0, 0, 1, 1, 0, 1]), sub=np.array([0, 1, 2, 3, 1, 2]))
    probe = read_npz_probe_set(tmp_path / "ok.npz")
    assert probe.has_hierarchy and probe.sub.tolist() == [0, 1, 2, 3, 1, 2]

    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0, 0, 1, 1, 0, 1]), sub=np.array([0, 1, 2, 3, 2, 5]))
    with pytest.raises(DatasetError, match="sub 2 occurs with y 0, 1"):
        read_npz_probe_set(tmp_path / "bad.npz")


def test_npz_sub_nesting_checked_across_splits(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 2, 2), dtype=np.float32)
    np.savez(
        tmp_path / "s.npz", x=x, y=np.array([0, 1]), sub=np.array([0, 1]),
        x_test=x, y_test=np.array([1, 1]), sub_test=np.array([0, 1]),
    )  # fmt: skip
    with pytest.raises(DatasetError, match="train and test splits together.*sub 0 occurs with y 0, 1"):
        read_npz_probe_set(tmp_path / "s.npz", split="test")


def test_npz_missing_keys_list_present_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", images=np.zeros((2, 1, 2, 2)), y=_labels(2))
    with pytest.raises(DatasetError, match="missing key\\(s\\) x; keys present: images, y"):
        read_npz_probe_set(tmp_path / "k.npz")
    np.savez(tmp_path / "t.npz", x=np.zeros((2, 1, 2, 2)), y=_labels(2))
    with pytest.raises(DatasetError, match="x_test, y_test.*keys present: x, y"):
        read_npz_probe_set(tmp_path / "t.npz", split="test")


def test_npz_test_split_and_num_classes_over_both_splits(tmp_path: Path) -> None:
    x = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    x_test = np.full((2, 1, 2, 2), 255, dtype=np.uint8)
    np.savez(tmp_path / "s.npz", x=x, y=np.array([0, 1, 1]), x_test=x_test, y_test=np.array([4, 0]))
    train = read_npz_probe_set(tmp_path / "s.npz", split="train")
    test = read_npz_probe_set(tmp_path / "s.npz", split="test", name="mine")
    assert train.num_classes == test.num_classes == 5
    assert len(train) == 3 and test.name == "mine" and test.split == "test"
    assert test.y.tolist() == [4, 0] and bool((next(test.batches(8)) == 1.0).all())


def test_npz_object_array_refused_without_pickle(tmp_path: Path) -> None:
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((1, 2, 2)), np.zeros((1, 3, 3))
    np.savez(tmp_path / "obj.npz", x=ragged, y=_labels(2))
    with pytest.raises(DatasetError, match="object array.*pickle"):
        read_npz_probe_set(tmp_path / "obj.npz")


def test_npz_malformed_files(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DatasetError, match="not an .npz file"):
        read_npz_probe_set(tmp_path / "text.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(DatasetError, match="not an .npz file"):
        read_npz_probe_set(tmp_path / "plain.npz")
    with pytest.raises(DatasetError, match="no such file"):
        load_probe_set(str(tmp_path / "absent.npz"))

    cases = {
        "length": (np.zeros((3, 1, 2, 2)), _labels(2), "y has 2 entries but there are 3 samples"),
        "empty": (np.zeros((0, 1, 2, 2)), _labels(0), "empty"),
        "ndim5": (np.zeros((2, 1, 1, 2, 2)), _labels(2), "must be \\[N, C, H, W\\]"),
        "ndim2": (np.zeros((2, 4)), _labels(2), "got shape \\(2, 4\\)"),
        "y2d": (np.zeros((2, 1, 2, 2)), np.zeros((2, 1), dtype=np.int64), "y must be 1-D"),
    }
    for case, (x, y, message) in cases.items():
        np.savez(tmp_path / f"{case}.npz", x=x, y=y)
        with pytest.raises(DatasetError, match=message):
            read_npz_probe_set(tmp_path / f"{case}.npz")


# ---------------------------------------------------------------------------------------- names, splits


def test_unknown_name_and_split() -> None:
    with pytest.raises(DatasetError) as raised:
        load_probe_set("imagenet")
    assert all(name in raised.value.detail for name in BUILTIN_DATASET_NAMES)
    assert ".npz" in raised.value.detail
    with pytest.raises(DatasetError, match="unknown split 'val': use one of train, test"):
        load_probe_set("digits", "val")


# ------------------------------------------------------------------------------- ProbeSet and subsets


def _probe(labels: list[int], sub: list[int] | None = None) -> ProbeSet:
    n_samples = len(labels)
    x = (
        torch.arange(n_samples * 12, dtype=torch.int64)
        .remainder(256)
        .to(torch.uint8)
        .reshape(n_samples, 3, 2, 2)
    )
    return ProbeSet(
        name="t", split="train", x=x, y=torch.tensor(labels), num_classes=max(labels) + 1,
        sub=None if sub is None else torch.tensor(sub), default_normalization=None,
    )  # fmt: skip


def test_batches_yield_scaled_float_in_order() -> None:
    probe = _probe([0, 1, 2, 0, 1, 2, 0])
    batches = list(probe.batches(3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert all(b.dtype == torch.float32 for b in batches)
    torch.testing.assert_close(torch.cat(batches), probe.x.to(torch.float32) / 255, rtol=0, atol=0)
    assert probe.x.dtype == torch.uint8  # not converted in place
    assert batches[2][0, 2, 1, 1].item() == pytest.approx(((6 * 12 + 11) % 256) / 255)
    with pytest.raises(ValueError):
        next(probe.batches(0))


def test_subset_keeps_alignment_and_num_classes() -> None:
    probe = _probe([0, 1, 2, 0, 1, 2], sub=[0, 2, 4, 1, 3, 5])
    part = probe.subset(torch.tensor([4, 1]))
    assert part.y.tolist() == [1, 1] and part.sub.tolist() == [3, 2] and part.num_classes == 3
    assert torch.equal(part.x[0], probe.x[4])
    masked = probe.subset(probe.y == 2)
    assert masked.sub.tolist() == [4, 5] and len(masked) == 2


def test_balanced_subset_counts_order_and_seed() -> None:
    labels = [0] * 10 + [1] * 3 + [2] * 7
    probe = _probe(labels, sub=list(range(20)))
    subset = balanced_subset(probe, samples_per_class=5, seed=0)
    assert np.bincount(subset.y.numpy(), minlength=3).tolist() == [5, 3, 5]
    chosen = subset.sub.tolist()  # sub = sample index here
    assert chosen == sorted(chosen) and {10, 11, 12} <= set(chosen)
    assert torch.equal(subset.x, probe.x[torch.tensor(chosen)])
    assert balanced_subset(probe, 5, seed=0).sub.tolist() == chosen
    others = {tuple(balanced_subset(probe, 5, seed=seed).sub.tolist()) for seed in range(1, 6)}
    assert others - {tuple(chosen)}
    assert len(balanced_subset(probe, 100, seed=0)) == 20
    with pytest.raises(DatasetError):
        balanced_subset(probe, 0)


def test_balanced_subset_on_digits_is_deterministic() -> None:
    digits = load_probe_set("digits")
    first, second = balanced_subset(digits, 20, seed=7), balanced_subset(digits, 20, seed=7)
    assert len(first) == 100 and torch.equal(first.sub, second.sub) and torch.equal(first.x, second.x)
    assert first.has_hierarchy and first.num_classes == 5


def test_the_cli_reads_its_datasets_folder_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from gscore.cli.main import main
    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model

    write_cifar10(tmp_path / "cifar", n_per_batch=10)
    arch = {"family": "cnn", "in_channels": 3, "width": 4, "depth": 1, "num_classes": 10}
    save_safetensors(build_model(arch), tmp_path / "m.safetensors")
    monkeypatch.setenv("GSCORE_DATASETS_DIR", str(tmp_path / "cifar"))
    get_settings.cache_clear()
    try:
        command = [str(tmp_path / "m.safetensors"), "--arch", json.dumps(arch), "--dataset", "cifar10"]
        code = main(["score", *command, "--split", "test", "--measures", "c3", "--no-progress", "--json"])
    finally:
        get_settings.cache_clear()
    assert code == 0
    assert json.loads(capsys.readouterr().out)["meta"]["samples"] == 10
