"""Tiny CIFAR-10 / CIFAR-100 files in the real on-disk format, for tests (no download, no real data).

The official ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` hold dicts pickled by Python 2's
cPickle with protocol 2: every key and string is a Python 2 ``str`` (opcode ``SHORT_BINSTRING``), which
Python 3 reads as ``str`` with ``encoding="latin1"`` (what torchvision does) and as ``bytes`` with
``encoding="bytes"`` (the snippet on the CIFAR page, hence the keys ``b"data"``, ``b"labels"`` there),
and ``data`` is a numpy uint8 array [n, 3072] (1024 red, 1024 green, 1024 blue values, each row-major
32x32) pickled through ``numpy.core.multiarray._reconstruct``. The files written here are the same, only
with fewer samples, so torchvision's real loader code runs on them (their md5 differ, of course).

    root = write_cifar10(tmp_path)            # returns tmp_path: pass it as data_dir
    expected = cifar10_entries()              # the exact dicts written, keyed by file name

Usage from a test module: ``from cifar_files import write_cifar10`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))

CIFAR10_LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_FINE_LABEL_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
CIFAR100_COARSE_LABEL_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)  # fmt: skip
# The superclass (coarse label) of each fine label, as in the real CIFAR-100 files.
CIFAR100_COARSE_OF_FINE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip


def cifar10_entries(n_per_batch: int = 20, seed: int = 0) -> dict[str, dict[bytes, Any]]:
    """The dicts :func:`write_cifar10` pickles, by file name (data_batch_1..5, test_batch, batches.meta).

    Each batch: ``b"data"`` uint8 [n_per_batch, 3072] random pixels, ``b"labels"`` list of ints (every
    class equally often when n_per_batch is a multiple of 10), ``b"batch_label"``, ``b"filenames"``.
    """
    rng = np.random.default_rng(seed)
    entries: dict[str, dict[bytes, Any]] = {}
    for file_name, batch_label in [
        *((f, f"training batch {i} of 5") for i, f in enumerate(CIFAR10_TRAIN_FILES, start=1)),
        ("test_batch", "testing batch 1 of 1"),
    ]:
        labels = rng.permutation(np.arange(n_per_batch) % 10)
        entries[file_name] = {
            b"batch_label": batch_label.encode(),
            b"labels": [int(label) for label in labels],
            b"data": rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{file_name}_{i:05d}.png".encode() for i in range(n_per_batch)],
        }
    entries["batches.meta"] = {
        b"num_cases_per_batch": n_per_batch,
        b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES],
        b"num_vis": 3072,
    }
    return entries


def cifar100_entries(n_train: int = 200, n_test: int = 100, seed: int = 0) -> dict[str, dict[bytes, Any]]:
    """The dicts :func:`write_cifar100` pickles, by file name (train, test, meta).

    ``b"fine_labels"`` cycle through the 100 classes in a random order, ``b"coarse_labels"`` are their real
    superclasses (:data:`CIFAR100_COARSE_OF_FINE`), ``b"data"`` uint8 [n, 3072] random pixels.
    """
    rng = np.random.default_rng(seed)
    entries: dict[str, dict[bytes, Any]] = {}
    for file_name, n_samples in (("train", n_train), ("test", n_test)):
        fine = rng.permutation(np.arange(n_samples) % 100)
        entries[file_name] = {
            b"filenames": [f"{file_name}_{i:05d}.png".encode() for i in range(n_samples)],
            b"batch_label": f"{'training' if file_name == 'train' else 'testing'} batch 1 of 1".encode(),
            b"fine_labels": [int(label) for label in fine],
            b"coarse_labels": [CIFAR100_COARSE_OF_FINE[label] for label in fine],
            b"data": rng.integers(0, 256, size=(n_samples, 3072), dtype=np.uint8),
        }
    entries["meta"] = {
        b"fine_label_names": [name.encode() for name in CIFAR100_FINE_LABEL_NAMES],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_LABEL_NAMES],
    }
    return entries


def write_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; returns ``root``."""
    _write_entries(Path(root) / CIFAR10_FOLDER, cifar10_entries(n_per_batch, seed))
    return Path(root)


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python/{train, test, meta}``; returns ``root``."""
    _write_entries(Path(root) / CIFAR100_FOLDER, cifar100_entries(n_train, n_test, seed))
    return Path(root)


def python2_pickle_dumps(obj: Any) -> bytes:
    """Pickle ``obj`` the way Python 2's cPickle (protocol 2) wrote the CIFAR files."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _write_entries(folder: Path, entries: dict[str, dict[bytes, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, entry in entries.items():
        (folder / file_name).write_bytes(python2_pickle_dumps(entry))


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be changed
    """Protocol-2 pickler writing bytes and str as Python 2 ``str`` and numpy globals as ``numpy.core``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_python2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):  # numpy 2's name for what numpy 1 (Python 2) called numpy.core
            qualified = f"numpy.core{module[len('numpy._core') :]}\n{name or obj.__qualname__}\n"
            self.write(pickle.GLOBAL + qualified.encode("ascii"))
            self.memoize(obj)
            return
        super().save_global(obj, name)
