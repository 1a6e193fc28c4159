"""``gscore demo``: train a small CNN on the digits superclasses, save it, score it.

Shows a new user the whole path (spec -> checkpoint -> scores) in well under a
minute on a CPU, with nothing downloaded.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from gscore.errors import GScoreError, SpecError

DEMO_ARCH: dict[str, Any] = {"family": "cnn", "in_channels": 1, "width": 16, "depth": 3, "num_classes": 5}


def train_demo_model(out_dir: Path, epochs: int = 150, seed: int = 0) -> tuple[Path, Path, dict[str, float]]:
    """Train the demo CNN; returns (checkpoint path, arch spec path, accuracies)."""
    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.inputs.datasets import load_probe_set
    from gscore.models import build_model
    from gscore.training import accuracy, train_classifier

    if epochs < 1:
        raise SpecError(f"epochs must be a positive integer (got {epochs})", field="epochs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GScoreError(f"cannot create the output directory {out_dir}: {exc.strerror or exc}") from None
    train, test = load_probe_set("digits", "train"), load_probe_set("digits", "test")
    x_train, x_test = torch.cat(list(train.batches(len(train)))), torch.cat(list(test.batches(len(test))))
    torch.manual_seed(seed)
    model = build_model(DEMO_ARCH)
    # to about 100% training accuracy, as the paper's protocol (and rankings' min_train_accuracy) expect
    fit = train_classifier(
        model, x_train, train.y, epochs=epochs, lr=0.05, batch_size=64, seed=seed, stop_at_accuracy=0.995
    )
    accuracies = {"train_accuracy": fit.train_accuracy, "test_accuracy": accuracy(model, x_test, test.y)}
    checkpoint = out_dir / "demo-cnn.safetensors"
    save_safetensors(model, checkpoint)
    spec_path = out_dir / "demo-cnn.arch.json"
    spec_path.write_text(json.dumps(DEMO_ARCH, indent=2) + "\n")
    return checkpoint, spec_path, accuracies


def gscore_command() -> str:
    """How to call ``gscore`` from here: ``gscore`` when that is on PATH and is this installation, else the
    path of this environment's script (``.venv/bin/gscore`` after ``make run``, relative when under the
    current folder)."""
    script = Path(sys.executable).parent / "gscore"
    on_path = shutil.which("gscore")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "gscore"
    if not script.exists():
        return f"{sys.executable} -m gscore.cli"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def run_demo(out_dir: Path, epochs: int = 150, seed: int = 0, log: TextIO | None = None) -> dict[str, Any]:
    """Train, save and score the demo model; returns the ``gscore score --json`` result."""
    from gscore.pipeline import ScoreRequest, score

    started = time.perf_counter()
    checkpoint, spec_path, accuracies = train_demo_model(out_dir, epochs=epochs, seed=seed)
    if log is not None:
        print(
            f"trained {DEMO_ARCH['family']} on digits superclasses in {time.perf_counter() - started:.1f}s: "
            f"train accuracy {accuracies['train_accuracy']:.3f}, test accuracy {accuracies['test_accuracy']:.3f}\n"
            f"saved {checkpoint} and {spec_path}; scoring it now. Score it yourself with:\n"
            f"  {gscore_command()} score {checkpoint} --arch {spec_path} --dataset digits\n",
            file=log,
        )
    result = score(ScoreRequest(checkpoint=checkpoint, arch=DEMO_ARCH, dataset="digits", device="cpu"))
    result["meta"].update(accuracies)
    return result
