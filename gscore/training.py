"""Minimal, deterministic classifier training for the demo and the digits experiment.

Not a training framework: plain SGD/Adam epochs over in-memory tensors, used to
produce small checkpoints whose generalization we then score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TrainingResult:
    epochs: int
    train_accuracy: float
    final_loss: float


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on x [N, ...], y [N]."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def random_shift(max_shift: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Augmentation: shift each image by up to ``max_shift`` pixels in x and y, filling by reflection."""

    def apply(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        padded = nn.functional.pad(batch, (max_shift,) * 4, mode="reflect")
        height, width = batch.shape[-2:]
        out = torch.empty_like(batch)
        offsets = torch.randint(0, 2 * max_shift + 1, (len(batch), 2), generator=generator)
        for i, (dy, dx) in enumerate(offsets.tolist()):
            out[i] = padded[i, :, dy : dy + height, dx : dx + width]
        return out

    return apply


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    stop_at_loss: float = 1e-4,
    stop_at_accuracy: float | None = None,
) -> TrainingResult:
    """Train in place with cross-entropy; x float32 [N, ...], y int64 [N]. Deterministic given ``seed``.

    ``optimizer`` is ``sgd`` (with ``momentum``) or ``adam``; training stops early when the
    epoch's mean loss falls below ``stop_at_loss`` (the paper's rule) or, when ``stop_at_accuracy``
    is set, once the (un-augmented) training accuracy reaches it.
    """
    generator = torch.Generator().manual_seed(seed)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    epochs_run, mean_loss = 0, float("inf")
    for epoch in range(1, epochs + 1):
        epochs_run = epoch
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            batch = x[index] if augment is None else augment(x[index], generator)
            opt.zero_grad()
            loss = loss_fn(model(batch), y[index])
            loss.backward()
            opt.step()
            total += loss.item() * len(index)
        mean_loss = total / len(x)
        if mean_loss < stop_at_loss:
            break
        if stop_at_accuracy is not None and accuracy(model, x, y) >= stop_at_accuracy:
            break
    model.eval()
    return TrainingResult(epochs=epochs_run, train_accuracy=accuracy(model, x, y), final_loss=mean_loss)
