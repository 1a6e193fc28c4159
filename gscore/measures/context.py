"""The inputs of one scoring run, prepared once and shared by every measure that needs them.

:class:`MeasureContext` is what a measure function receives. It knows every measure of the run and its
parameters before any of them is computed, so that the first request for a probe set's activations
runs ONE extraction pass capturing everything that every measure on that probe set needs (the ReLU
pre-activations of c1-c4 and the representations of the intrinsic-dimension measures), and the sharpness
measures with the same sample size and seed share one training sample. Everything is cached, failures
included: a model without ReLUs makes every activation measure ``undefined`` with one extraction attempt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gscore.errors import DatasetError, JobCancelled, MeasureError
from gscore.inputs import datasets
from gscore.inputs.extraction import Activations, extract_preactivations
from gscore.measures.types import Measure, MeasureUndefined

__all__ = ["MeasureContext", "ProbeKey"]

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class ProbeKey:
    """Which probe set: a split, an optional cap on its size (class-balanced) and the subset's seed."""

    split: str
    samples: int | None
    seed: int


@dataclass
class MeasureContext:
    """Model, data and callbacks of one run; see the module docstring.

    ``model`` is in eval mode on ``device`` with the input normalization prepended; ``probe`` is the
    request's probe set (its split, subset with ``samples_per_class``), ``probe_key`` its key.
    ``plan`` lists every measure of the run with its resolved parameters. ``cache`` is free for measure
    families that share work (the tangent kernel of the three ``ntk_*`` measures).
    """

    model: nn.Module
    device: torch.device
    dataset: str | None  # None: in-memory data, only the splits given with set_split_set exist
    data_dir: Path
    probe: datasets.ProbeSet
    probe_key: ProbeKey
    samples_per_class: int | None
    batch_size: int
    seed: int
    plan: list[tuple[Measure, dict[str, Any]]]
    progress: ProgressCallback = lambda stage, done, total: None
    should_cancel: CancelCheck | None = None
    initial_model: nn.Module | None = None  # the same architecture at initialization, prepared like model
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)
    _splits: dict[str, datasets.ProbeSet] = field(default_factory=dict)
    _probes: dict[ProbeKey, datasets.ProbeSet] = field(default_factory=dict)
    _activations: dict[ProbeKey, Activations | MeasureError] = field(default_factory=dict)
    _samples: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._probes[self.probe_key] = self.probe

    # -- callbacks -------------------------------------------------------------------------------
    def report(self, stage: str, done: int, total: int) -> None:
        self.progress(stage, done, total)

    def check_cancel(self) -> None:
        """Raise JobCancelled when the run was cancelled."""
        if self.should_cancel is not None and self.should_cancel():
            raise JobCancelled("the job was cancelled")

    # -- data ------------------------------------------------------------------------------------
    def _key(self, split: str | None, samples: int | None, seed: int | None) -> ProbeKey:
        key = ProbeKey(split or self.probe_key.split, samples, self.seed if seed is None else int(seed))
        if key.samples is None and key.split == self.probe_key.split:
            return self.probe_key  # the seed only picks a cap's subset: without a cap, the run's probe set
        return key

    def probe_key_of(self, params: dict[str, Any]) -> ProbeKey:
        """The probe set a measure reads: its own ``split``/``samples``/``seed`` parameters where it has them
        (the intrinsic-dimension and tangent-kernel measures), else the run's probe set."""
        if "split" not in params and "samples" not in params:
            return self.probe_key
        return self._key(params.get("split"), params.get("samples"), params.get("seed"))

    def split_set(self, split: str) -> datasets.ProbeSet:
        """The whole ``split`` of the run's dataset, read once."""
        if split not in self._splits:
            if self.dataset is None:
                raise DatasetError(
                    f"no {split!r} split was given (in-memory data has only {', '.join(self._splits)}); "
                    f"pass one for the measures that read the {split} split"
                )
            self._splits[split] = datasets.load_probe_set(self.dataset, split, self.data_dir)
        return self._splits[split]

    def set_split_set(self, split: str, probe: datasets.ProbeSet) -> None:
        """Record an already loaded split (the pipeline loads the request's split before subsetting)."""
        self._splits[split] = probe

    def probe_set(
        self, split: str | None = None, samples: int | None = None, seed: int | None = None
    ) -> datasets.ProbeSet:
        """The probe set of ``split`` (default: the run's), with the run's ``samples_per_class`` applied and
        capped at ``samples`` (class-balanced, ``samples // classes`` per class, seeded). Cached."""
        key = self._key(split, samples, seed)
        if key not in self._probes:
            probe = self.split_set(key.split)
            if self.samples_per_class is not None:
                probe = datasets.balanced_subset(probe, self.samples_per_class, seed=self.seed)
            if samples is not None and samples < len(probe):
                probe = datasets.balanced_subset(probe, max(1, samples // probe.num_classes), seed=key.seed)
            self._probes[key] = probe
        return self._probes[key]

    def training_sample(self, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [n, C, H, W] float32, y [n])``: a seeded class-balanced sample of the whole TRAINING split,
        shared by every measure asking for the same size and seed."""
        key = (per_class, seed)
        if key not in self._samples:
            sample = datasets.balanced_subset(self.split_set("train"), per_class, seed=seed)
            self._samples[key] = (torch.cat(list(sample.batches(max(1, len(sample))))), sample.y)
        return self._samples[key]

    def training_sample_of(self, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`training_sample` for a total size: ``ceil(samples / classes)`` per class."""
        per_class = max(1, math.ceil(int(samples) / self.split_set("train").num_classes))
        return self.training_sample(per_class, seed)

    # -- activations -----------------------------------------------------------------------------
    def _captures(self, key: ProbeKey) -> dict[str, bool]:
        """What the run's measures read from probe set ``key``: the pooled pre-activations (``activations``),
        stage outputs and last-linear input (``representations``), the last-linear input alone
        (``last_linear``), the model's output (``logits``) and the first ReLU output (``first_relu``,
        for a ``layer`` parameter of ``"first"``)."""
        wanted = dict.fromkeys(("activations", "representations", "last_linear", "logits"), False)
        wanted["first_relu"] = False
        for measure, params in self.plan:
            if self.probe_key_of(params) != key:
                continue
            for need in wanted:
                wanted[need] = wanted[need] or need in measure.needs
            if "last_linear" in measure.needs and params.get("layer") == "first":
                wanted["first_relu"] = True
        return wanted

    def activations(
        self, split: str | None = None, samples: int | None = None, seed: int | None = None
    ) -> Activations:
        """The activations of probe set (split, samples, seed), extracted once in one forward pass with
        every capture any measure of the run needs on it. Raises :class:`MeasureUndefined` (cached) when
        the model has nothing to capture (no ReLU-type call)."""
        key = self._key(split, samples, seed)
        if key not in self._activations:
            self._activations[key] = self._extract(key)
        cached = self._activations[key]
        if isinstance(cached, MeasureError):
            raise cached
        return cached

    def extracted(self, key: ProbeKey | None = None) -> Activations | None:
        """The activations of ``key`` (default: the run's probe set) if they were extracted, else None."""
        cached = self._activations.get(key or self.probe_key)
        return cached if isinstance(cached, Activations) else None

    def _extract(self, key: ProbeKey) -> Activations | MeasureError:
        wanted = self._captures(key)
        options: dict[str, Any] = {
            "representations": wanted["representations"],
            "last_linear": wanted["last_linear"],
            "logits": wanted["logits"],
            "first_relu_output": wanted["first_relu"],
            # without pre-activation measures a model without ReLUs is no error
            "preactivations": wanted["activations"] or not any(wanted.values()),
        }
        probe = self.probe_set(key.split, key.samples, key.seed)
        stage = "extract" if key == self.probe_key else f"extract_{key.split}"
        started = time.perf_counter()
        try:
            return extract_preactivations(
                self.model,
                probe.batches(self.batch_size),
                num_samples=len(probe),
                device=self.device,
                progress=lambda done, total: self.report(stage, done, total),
                should_cancel=self.should_cancel,
                **options,
            )
        except MeasureError as exc:
            return MeasureUndefined(str(exc))
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started

    # -- accuracy --------------------------------------------------------------------------------
    def probe_accuracy(self) -> float:
        """Top-1 accuracy of the model on the run's probe set: from the extraction pass when it ran with
        predictions, else one plain forward pass."""
        extracted = self.extracted()
        predictions = getattr(extracted, "predictions", None) if extracted is not None else None
        labels = self.probe.y
        if predictions is None:
            chunks = []
            with torch.inference_mode():
                for batch in self.probe.batches(self.batch_size):
                    chunks.append(self.model(batch.to(self.device)).argmax(1).cpu())
            predictions = torch.cat(chunks)
        return float((predictions.cpu() == labels).double().mean())
