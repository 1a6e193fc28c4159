"""Probe sets by name: the samples a job scores a model on.

A probe set is ``x`` [N, C, H, W] (uint8, scaled by 1/255 batch by batch, or float32 used as is),
``y`` [N] int64 (the labels the model was trained on, 0..num_classes-1) and, for datasets with a
label hierarchy, ``sub`` [N] int64: fine labels nested in ``y`` (each ``sub`` value occurs with exactly
one ``y`` value; see docs/measures.md, "What the measures look at").

Names that :func:`load_probe_set` understands, each with the splits ``train`` and ``test``:

- ``cifar10``: CIFAR-10, y = the 10 classes, no hierarchy.
- ``cifar100``: CIFAR-100, y = the 100 fine labels, no hierarchy.
- ``cifar100-coarse``: CIFAR-100, y = the 20 superclasses (``coarse_labels``), sub = the 100 fine labels.
- ``digits``: scikit-learn's 8x8 digits (bundled with scikit-learn, always installed), x = pixels / 16 as
  float32 [N, 1, 8, 8]. Hierarchy: the 10 digits grouped into 5 superclasses of two visually similar
  digits, y = superclass, sub = digit (:data:`DIGITS_SUPERCLASSES`)::

      y = 0: {0, 6}    y = 1: {1, 7}    y = 2: {2, 5}    y = 3: {3, 8}    y = 4: {4, 9}

  Splits: ``sklearn.model_selection.train_test_split`` of the 1797 sample indices with
  ``test_size=0.25, random_state=0, stratify=digit``, each split kept in the original sample order
  (train 1347 samples, test 450).
- a path ending in ``.npz``: see :func:`read_npz_probe_set`.

CIFAR is read with torchvision's own loader from the data directory (default
``DEFAULT_DATASETS_DIR``; the CLI and the service pass ``GSCORE_DATASETS_DIR``), which must hold the extracted official archives:
``cifar-10-batches-py/`` and ``cifar-100-python/``. torchvision verifies the md5 of every file; here the
files are only required to exist (:func:`_presence_checked_cifar`): the data directory is configured by
the server operator and trusted, and the md5 check would reject the tiny files the tests write in the
real format. For the same reason the pickles torchvision reads from there are trusted; uploaded data
only ever comes in as ``.npz``, which is read without pickle.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gscore.errors import DatasetError

BUILTIN_DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "cifar100-coarse", "digits")
SPLITS: tuple[str, ...] = ("train", "test")

Normalization = tuple[tuple[float, ...], tuple[float, ...]]
CIFAR10_NORMALIZATION: Normalization = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_NORMALIZATION: Normalization = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))

DIGITS_SUPERCLASSES: tuple[tuple[int, ...], ...] = ((0, 6), (1, 7), (2, 5), (3, 8), (4, 9))
"""Superclass s of the digits dataset = the digits in ``DIGITS_SUPERCLASSES[s]``."""
DIGITS_TEST_SIZE = 0.25
DIGITS_SPLIT_SEED = 0


@dataclass
class ProbeSet:
    """Samples to score on. ``x`` [N, C, H, W] uint8 or float32; ``y``, ``sub`` [N] int64."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    sub: torch.Tensor | None
    num_classes: int
    default_normalization: Normalization | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype not in (torch.uint8, torch.float32):
            raise ValueError(
                f"x must be uint8 or float32 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}"
            )
        for field_name, labels in (("y", self.y), ("sub", self.sub)):
            if labels is not None and (labels.dtype != torch.int64 or labels.shape != (self.x.shape[0],)):
                raise ValueError(
                    f"{field_name} must be int64 [{len(self)}], got {labels.dtype} {tuple(labels.shape)}"
                )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def has_hierarchy(self) -> bool:
        """True when the set has fine labels ``sub`` nested in ``y``."""
        return self.sub is not None

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """float32 [B, C, H, W] batches in sample order; uint8 pixels are scaled by 1/255 batch by batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            batch = self.x[start : start + batch_size]
            yield batch.to(torch.float32).div_(255.0) if batch.dtype == torch.uint8 else batch

    def subset(self, index: torch.Tensor) -> ProbeSet:
        """The samples at ``index`` ([K] integer indices or [N] bool mask); same name, split, classes."""
        index = torch.as_tensor(index)
        index = index.nonzero().squeeze(1) if index.dtype == torch.bool else index.to(torch.int64)
        return replace(
            self, x=self.x[index], y=self.y[index], sub=None if self.sub is None else self.sub[index]
        )


def load_probe_set(name: str, split: str = "train", data_dir: Path | None = None) -> ProbeSet:
    """Load a built-in dataset (:data:`BUILTIN_DATASET_NAMES`) or an ``.npz`` file by path."""
    _check_split(split)
    builtin_name = name.strip().lower()
    if builtin_name == "digits":
        return _load_digits(split)
    if builtin_name in _CIFAR_VARIANTS:
        return _load_cifar(builtin_name, split, _datasets_dir(data_dir))
    if name.lower().endswith(".npz"):
        return read_npz_probe_set(Path(name), split=split)
    raise DatasetError(
        f"unknown dataset {name!r}: use one of {', '.join(BUILTIN_DATASET_NAMES)} "
        "or a path to a file whose name ends with .npz"
    )


def balanced_subset(probe: ProbeSet, samples_per_class: int, seed: int = 0) -> ProbeSet:
    """min(samples_per_class, class size) samples of each class of ``y``, drawn with a seeded RNG.

    Classes are drawn in order 0..num_classes-1 from one ``numpy.random.default_rng(seed)``; the chosen
    indices are sorted, so the subset keeps the probe set's sample order. Same inputs, same subset.
    """
    if samples_per_class < 1:
        raise DatasetError(f"samples_per_class must be >= 1, got {samples_per_class}")
    rng = np.random.default_rng(seed)
    labels = probe.y.numpy()
    chosen: list[np.ndarray] = []
    for label in range(probe.num_classes):
        members = np.flatnonzero(labels == label)
        if len(members) > samples_per_class:
            members = rng.choice(members, size=samples_per_class, replace=False)
        chosen.append(members)
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return probe.subset(torch.from_numpy(index.astype(np.int64)))


# ---------------------------------------------------------------------------------------------------------
# .npz files


def has_split(name: str, split: str) -> bool:
    """Whether dataset ``name`` (a built-in name or an ``.npz`` path) has ``split``, without reading it:
    built-in datasets have both splits; an ``.npz`` has the test split when it holds ``x_test`` and
    ``y_test``. An unreadable file counts as having it (reading it reports the problem)."""
    _check_split(split)
    if name.strip().lower() in BUILTIN_DATASET_NAMES or split == "train":
        return True
    try:
        with zipfile.ZipFile(Path(name)) as archive:
            keys = {member.removesuffix(".npy") for member in archive.namelist()}
    except (OSError, ValueError, zipfile.BadZipFile):
        return True
    return {"x_test", "y_test"} <= keys


def read_npz_probe_set(
    path: Path, split: str = "train", name: str | None = None, max_bytes: int | None = None
) -> ProbeSet:
    """Read a probe set from an ``.npz`` file (never unpickles; bounded: see ``gscore.inputs.archives``).

    Keys: ``x`` and ``y`` (required), ``sub`` (optional); the test split reads ``x_test``, ``y_test``,
    ``sub_test`` instead.

    - ``x``: [N, C, H, W], [N, H, W, C] or [N, H, W] (grayscale, becomes [N, 1, H, W]). Taken as
      channels-last when the last dim is 1 or 3 and the second is not. uint8 is kept (scaled by 1/255 per
      batch); float16/32/64 become float32 used as is (NaN and inf are refused); other dtypes are refused.
    - ``y``: [N] integers >= 0; num_classes = 1 + the largest label in ``y`` and ``y_test`` (whichever
      are present), so a class may have no sample in a split.
    - ``sub``: [N] integers >= 0, nested in ``y``: each ``sub`` value occurs with exactly one ``y`` value
      (also across the two splits when both have ``sub``).

    ``max_bytes`` (None: no cap; the service passes ``GSCORE_MAX_DATASET_BYTES``) caps the archive's
    uncompressed size, checked from its directory before anything is inflated (``DatasetTooLarge``); every
    array's header must declare exactly the bytes its member holds, whatever the cap.
    """
    from gscore.inputs.archives import DatasetTooLarge, check_zip_budget, read_npy_member

    _check_split(split)
    path = Path(path)
    label = name or path.name
    if not path.is_file():
        raise DatasetError(f"{label}: no such file {path}")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{label}: not an .npz file (a zip archive written by numpy.savez)")
    suffix, other_suffix = ("", "_test") if split == "train" else ("_test", "")
    try:
        infos = check_zip_budget(path, max_bytes, what="dataset", error=DatasetTooLarge)
        members = {info.filename.removesuffix(".npy"): info for info in infos}
        present = sorted(members)
        missing = [key + suffix for key in ("x", "y") if key + suffix not in present]
        if missing:
            hint = " (the test split needs x_test and y_test)" if split == "test" else ""
            raise DatasetError(
                f"{label}: missing key(s) {', '.join(missing)}{hint}; "
                f"keys present: {', '.join(present) or 'none'}"
            )
        # the images of the other split are never read; its labels are (small) and checked too
        wanted = ["x" + suffix] + [key for key in _NPZ_LABEL_KEYS if key in present]
        with zipfile.ZipFile(path) as archive:
            arrays = {key: read_npy_member(archive, members[key], label) for key in wanted}
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise DatasetError(f"{label}: unreadable .npz file ({exc})") from exc

    x = _npz_images(arrays["x" + suffix], "x" + suffix, label)
    y = _npz_labels(arrays["y" + suffix], "y" + suffix, len(x), label)
    sub = (
        _npz_labels(arrays["sub" + suffix], "sub" + suffix, len(x), label)
        if "sub" + suffix in arrays
        else None
    )
    if sub is not None:
        _check_nesting(sub, y, label, sub_name="sub" + suffix, y_name="y" + suffix)
    largest = int(y.max())
    if "y" + other_suffix in arrays:
        other_y_key, other_sub_key = "y" + other_suffix, "sub" + other_suffix
        other_y = _npz_labels(arrays[other_y_key], other_y_key, None, label)
        largest = max(largest, int(other_y.max()))
        if sub is not None and other_sub_key in arrays:
            other_sub = _npz_labels(arrays[other_sub_key], other_sub_key, len(other_y), label)
            both_sub, both_y = np.concatenate([sub, other_sub]), np.concatenate([y, other_y])
            _check_nesting(both_sub, both_y, f"{label} (train and test splits together)")
    return ProbeSet(
        name=label,
        split=split,
        x=torch.from_numpy(x),
        y=torch.from_numpy(y),
        sub=None if sub is None else torch.from_numpy(sub),
        num_classes=largest + 1,
        default_normalization=None,
    )


_NPZ_LABEL_KEYS = ("y", "sub", "y_test", "sub_test")


def _npz_images(x: np.ndarray, key: str, label: str) -> np.ndarray:
    """[N, C, H, W] uint8 or float32, contiguous."""
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(
            f"{label}: {key} must be [N, C, H, W], [N, H, W, C] or [N, H, W], got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise DatasetError(f"{label}: {key} is empty (0 samples)")
    if 0 in x.shape:
        raise DatasetError(f"{label}: {key} has an empty dimension, shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype in (np.float16, np.float32, np.float64):
        with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
            x32 = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x32).all():
            raise DatasetError(
                f"{label}: {key} contains NaN or infinite values (after conversion to float32)"
            )
        return x32
    raise DatasetError(
        f"{label}: {key} has dtype {x.dtype}; use uint8 (pixels 0..255, scaled by 1/255) "
        "or float16/32/64 (used as is)"
    )


def _npz_labels(labels: np.ndarray, key: str, n_samples: int | None, label: str) -> np.ndarray:
    """[N] int64 >= 0; N must be ``n_samples`` unless that is None."""
    if labels.ndim != 1:
        raise DatasetError(f"{label}: {key} must be 1-D [N], got shape {labels.shape}")
    if n_samples is not None and len(labels) != n_samples:
        raise DatasetError(f"{label}: {key} has {len(labels)} entries but there are {n_samples} samples")
    if len(labels) == 0:
        raise DatasetError(f"{label}: {key} is empty (0 samples)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{label}: {key} must hold integer labels 0..K-1, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise DatasetError(f"{label}: {key} must be >= 0, found {int(labels.min())}")
    return labels


def _check_nesting(
    sub: np.ndarray, y: np.ndarray, label: str, sub_name: str = "sub", y_name: str = "y"
) -> None:
    """Raise unless each value of ``sub`` occurs with exactly one value of ``y``."""
    pairs = np.unique(np.stack([sub, y], axis=1), axis=0)  # sorted by sub, then y
    sub_values, counts = np.unique(pairs[:, 0], return_counts=True)
    spanning = sub_values[counts > 1]
    if len(spanning):
        examples = []
        for value in spanning[:5]:
            y_values = ", ".join(str(int(v)) for v in pairs[pairs[:, 0] == value, 1])
            examples.append(f"{sub_name} {int(value)} occurs with {y_name} {y_values}")
        more = f" (and {len(spanning) - 5} more)" if len(spanning) > 5 else ""
        raise DatasetError(
            f"{label}: {sub_name} is not nested in {y_name} (each fine label must belong to one class): "
            + "; ".join(examples)
            + more
        )


# ---------------------------------------------------------------------------------------------------------
# digits


def _load_digits(split: str) -> ProbeSet:
    images, digits, split_index = _digits_arrays()
    index = split_index[split]
    superclass_of_digit = np.empty(10, dtype=np.int64)
    for superclass, members in enumerate(DIGITS_SUPERCLASSES):
        superclass_of_digit[list(members)] = superclass
    digit = digits[index]
    return ProbeSet(
        name="digits",
        split=split,
        x=torch.from_numpy(images[index]),  # fancy indexing copies: the cache stays untouched
        y=torch.from_numpy(superclass_of_digit[digit]),
        sub=torch.from_numpy(digit.copy()),
        num_classes=len(DIGITS_SUPERCLASSES),
        default_normalization=None,
    )


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(images float32 [1797, 1, 8, 8] in [0, 1], digit int64 [1797], {split: sorted sample indices})."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    digits = bunch.target.astype(np.int64)
    train_index, test_index = train_test_split(
        np.arange(len(digits)), test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SPLIT_SEED, stratify=digits
    )
    return images, digits, {"train": np.sort(train_index), "test": np.sort(test_index)}


# ---------------------------------------------------------------------------------------------------------
# CIFAR


@dataclass(frozen=True)
class _CifarVariant:
    torchvision_class: str  # "CIFAR10" or "CIFAR100"
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    archive: str
    num_classes: int
    coarse: bool  # y = coarse_labels, sub = fine labels
    normalization: Normalization

    @property
    def files(self) -> tuple[str, ...]:
        """Paths relative to the data directory of every file the archive extracts and torchvision needs."""
        return tuple(f"{self.folder}/{f}" for f in (*self.train_files, *self.test_files, self.meta_file))


_CIFAR10 = _CifarVariant(
    torchvision_class="CIFAR10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    archive="cifar-10-python.tar.gz",
    num_classes=10,
    coarse=False,
    normalization=CIFAR10_NORMALIZATION,
)
_CIFAR100 = _CifarVariant(
    torchvision_class="CIFAR100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    archive="cifar-100-python.tar.gz",
    num_classes=100,
    coarse=False,
    normalization=CIFAR100_NORMALIZATION,
)
_CIFAR_VARIANTS: dict[str, _CifarVariant] = {
    "cifar10": _CIFAR10,
    "cifar100": _CIFAR100,
    "cifar100-coarse": replace(_CIFAR100, num_classes=20, coarse=True),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


# Where built-in datasets live when the caller names no folder (the CLI and the service pass their settings'
# GSCORE_DATASETS_DIR, whose default is this same folder).
DEFAULT_DATASETS_DIR = Path("gscore-data") / "datasets"


def _datasets_dir(data_dir: Path | None) -> Path:
    return Path(data_dir) if data_dir is not None else DEFAULT_DATASETS_DIR


def _missing_cifar_files(variant: _CifarVariant, data_dir: Path) -> list[str]:
    return [f for f in variant.files if not (data_dir / f).is_file()]


@cache
def _presence_checked_cifar(torchvision_class: str) -> type:
    """torchvision's CIFAR10/CIFAR100 loader with the md5 checks replaced by file-presence checks.

    torchvision's ``check_integrity(path, md5=None)`` only tests that the file exists; setting every md5
    to None keeps torchvision's own loading code and drops only the checksum (trusted data directory).
    """
    import torchvision.datasets

    base = getattr(torchvision.datasets, torchvision_class)
    return type(
        f"PresenceChecked{torchvision_class}",
        (base,),
        {
            "__doc__": f"torchvision {torchvision_class}, checking that files exist instead of their md5.",
            "train_list": [[file_name, None] for file_name, _ in base.train_list],
            "test_list": [[file_name, None] for file_name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def check_installed(name: str, data_dir: Path | None = None) -> None:
    """Raise the DatasetError :func:`load_probe_set` would raise for a built-in dataset whose files are
    missing (naming each expected file and the archive to extract); digits and other names pass."""
    builtin_name = name.strip().lower()
    if builtin_name in _CIFAR_VARIANTS:
        _require_cifar_files(builtin_name, _datasets_dir(data_dir))


def _require_cifar_files(name: str, data_dir: Path) -> None:
    variant = _CIFAR_VARIANTS[name]
    missing = _missing_cifar_files(variant, data_dir)
    if missing:
        raise DatasetError(
            f"{name} is not installed: expected {', '.join(str(data_dir / f) for f in missing)}; "
            f"download {variant.archive} from {_CIFAR_URL} and extract it into {data_dir} "
            f"(it creates {variant.folder}/), or point the data directory (`data_dir`, `--data-dir`, GSCORE_DATASETS_DIR) to where it is extracted"
        )


def _load_cifar(name: str, split: str, data_dir: Path) -> ProbeSet:
    variant = _CIFAR_VARIANTS[name]
    _require_cifar_files(name, data_dir)
    loader = _presence_checked_cifar(variant.torchvision_class)
    try:
        dataset = loader(root=str(data_dir), train=split == "train", download=False)
        fine = np.asarray(dataset.targets, dtype=np.int64)
        pixels = np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2))  # torchvision keeps NHWC
        coarse = _read_cifar_coarse_labels(variant, data_dir, split, fine) if variant.coarse else None
    except DatasetError:
        raise
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise DatasetError(
            f"{name}: the files in {data_dir / variant.folder} are unreadable or not in the CIFAR format "
            f"({type(exc).__name__}: {exc}); re-extract {variant.archive} into {data_dir}"
        ) from exc
    if pixels.shape[1:] != (3, 32, 32) or len(fine) != len(pixels) or len(pixels) == 0:
        raise DatasetError(
            f"{name}: {data_dir / variant.folder} holds {len(pixels)} images of shape {pixels.shape[1:]} "
            f"and {len(fine)} labels; expected as many labels as 3x32x32 images"
        )
    fine_classes = 100 if variant.torchvision_class == "CIFAR100" else 10
    _check_label_range(fine, fine_classes, name, "labels" if fine_classes == 10 else "fine_labels")
    if coarse is not None:
        _check_label_range(coarse, variant.num_classes, name, "coarse_labels")
        _check_nesting(fine, coarse, name, sub_name="fine label", y_name="coarse labels")
    return ProbeSet(
        name=name,
        split=split,
        x=torch.from_numpy(pixels),
        y=torch.from_numpy(coarse if coarse is not None else fine),
        sub=torch.from_numpy(fine) if coarse is not None else None,
        num_classes=variant.num_classes,
        default_normalization=variant.normalization,
    )


def _read_cifar_coarse_labels(
    variant: _CifarVariant, data_dir: Path, split: str, fine: np.ndarray
) -> np.ndarray:
    """``coarse_labels`` of the entries torchvision read (it keeps only ``fine_labels``), same order.

    Unpickles the split's files a second time, as torchvision does (trusted data directory), and checks
    that their fine labels are the ones torchvision returned.
    """
    coarse: list[int] = []
    fine_again: list[int] = []
    for file_name in variant.train_files if split == "train" else variant.test_files:
        with open(data_dir / variant.folder / file_name, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        coarse.extend(entry["coarse_labels"])
        fine_again.extend(entry["fine_labels"])
    if not np.array_equal(np.asarray(fine_again, dtype=np.int64), fine):
        raise DatasetError(f"{variant.folder}: fine labels changed between two reads of the same files")
    return np.asarray(coarse, dtype=np.int64)


def _check_label_range(labels: np.ndarray, num_classes: int, name: str, key: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{name}: {key} must be in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}"
        )


# ---------------------------------------------------------------------------------------------------------
# catalogue


def builtin_datasets(data_dir: Path | None = None) -> list[dict[str, Any]]:
    """The built-in datasets for ``GET /v1/datasets``, one dict each with the same keys.

    ``name``, ``description``, ``classes`` (num_classes of y), ``subclasses`` (number of distinct sub
    values, None without hierarchy), ``hierarchy``, ``splits``, ``samples`` ({split: N}), ``installed``,
    ``where`` ({"directory": str | None, "files": [paths relative to it], "archive": str | None}; digits
    ships with scikit-learn: directory and archive None, files []).
    """
    directory = _datasets_dir(data_dir)
    grouping = ", ".join(f"{s}={{{a},{b}}}" for s, (a, b) in enumerate(DIGITS_SUPERCLASSES))
    descriptions = {
        "cifar10": "CIFAR-10, 32x32 RGB, y = the 10 classes.",
        "cifar100": "CIFAR-100, 32x32 RGB, y = the 100 fine classes.",
        "cifar100-coarse": "CIFAR-100, 32x32 RGB, y = the 20 superclasses (coarse labels), "
        "sub = the 100 fine classes.",
    }
    cifar_samples = {"train": 50000, "test": 10000}
    entries: list[dict[str, Any]] = []
    for name, variant in _CIFAR_VARIANTS.items():
        entries.append(
            {
                "name": name,
                "description": descriptions[name],
                "classes": variant.num_classes,
                "subclasses": 100 if variant.coarse else None,
                "hierarchy": variant.coarse,
                "splits": list(SPLITS),
                "samples": dict(cifar_samples),
                "installed": not _missing_cifar_files(variant, directory),
                "where": {
                    "directory": str(directory),
                    "files": list(variant.files),
                    "archive": variant.archive,
                },
            }
        )
    entries.append(
        {
            "name": "digits",
            "description": "scikit-learn's 8x8 grayscale digits, pixels / 16. Hierarchy: y = one of 5 "
            f"superclasses of two visually similar digits ({grouping}), sub = the digit. Splits: "
            f"stratified by digit, test_size={DIGITS_TEST_SIZE}, random_state={DIGITS_SPLIT_SEED}.",
            "classes": len(DIGITS_SUPERCLASSES),
            "subclasses": 10,
            "hierarchy": True,
            "splits": list(SPLITS),
            "samples": {"train": 1347, "test": 450},
            "installed": True,
            "where": {"directory": None, "files": [], "archive": None},
        }
    )
    return entries


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
