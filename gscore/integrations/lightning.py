"""``GScoreCallback``: score a Lightning model when ``fit`` ends (and optionally at every checkpoint save), in
process through :func:`gscore.score` or remotely through the service, and log each score to the trainer's
loggers as ``gscore/<measure>``. Needs ``pip install 'gscore[lightning]'``.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "gscore.integrations.lightning needs Lightning: pip install 'gscore[lightning]'", name=exc.name
    ) from exc
from torch import nn

from gscore.errors import SpecError
from gscore.scoring import ScoreResult, score

if TYPE_CHECKING:
    from gscore.client import Client

LOG_PREFIX = "gscore"


def scalar_hyperparameters(hparams: Any) -> dict[str, Any]:
    """The flat, JSON-safe part of a module's ``hparams``: numbers (finite), strings, booleans."""
    kept = {}
    for key, value in dict(hparams or {}).items():
        if isinstance(value, bool | str | int) or (isinstance(value, float) and math.isfinite(value)):
            kept[str(key)] = value
    return kept


class GScoreCallback(Callback):
    """Scores the model at the end of ``fit`` (and at every checkpoint save with ``every_checkpoint``).

    Parameters
    ----------
    dataset : str
        The probe set: a built-in dataset name or an ``.npz`` path (in process), or a dataset the server
        knows (remote).
    measures, params, split, samples_per_class, seed
        As in :func:`gscore.score` and ``Client.submit``.
    model_attribute : str, optional
        The attribute of the LightningModule holding the classifier to score (e.g. ``"model"``); default the
        module itself (its ``forward`` returns logits).
    every_checkpoint : bool
        Also score whenever the trainer saves a checkpoint.
    client : gscore.client.Client, optional
        Score remotely: the weights are uploaded with ``arch`` and the callback waits for the job. Without it
        the model is scored in this process (``device``).
    arch : dict, optional
        The architecture spec the classifier's ``state_dict`` matches (remote scoring only).
    collection, model_name, hyperparameters
        Remote only: file each scored checkpoint in ``collection`` as ``model_name`` (default ``model``;
        checkpoint saves add ``-step<N>``) with ``hyperparameters`` (default: the scalar ``hparams``).
    test_accuracy_metric, train_accuracy_metric : str, optional
        Names of the trainer's logged metrics sent as the entry's test and train accuracy.
    """

    def __init__(
        self,
        dataset: str,
        measures: list[str] | None = None,
        *,
        params: dict[str, dict[str, Any]] | None = None,
        split: str = "train",
        samples_per_class: int | None = None,
        seed: int = 0,
        model_attribute: str | None = None,
        every_checkpoint: bool = False,
        device: str = "auto",
        client: Client | None = None,
        arch: dict[str, Any] | None = None,
        collection: str | None = None,
        model_name: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        test_accuracy_metric: str | None = None,
        train_accuracy_metric: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if client is not None and arch is None:
            raise SpecError("remote scoring (client=...) needs the classifier's arch spec", field="arch")
        if client is None and collection is not None:
            raise SpecError(
                "collection=... needs client=... (the service keeps collections)", field="collection"
            )
        self.dataset, self.measures, self.params = dataset, measures, params or {}
        self.split, self.samples_per_class, self.seed = split, samples_per_class, seed
        self.model_attribute, self.every_checkpoint, self.device = model_attribute, every_checkpoint, device
        self.client, self.arch, self.collection = client, arch, collection
        self.model_name, self.hyperparameters = model_name, hyperparameters
        self.test_accuracy_metric, self.train_accuracy_metric = test_accuracy_metric, train_accuracy_metric
        self.timeout = timeout
        self.results: list[ScoreResult] = []
        self._scored_steps: set[int] = set()

    # ---- Lightning hooks --------------------------------------------------------------------------------
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.score_now(trainer, pl_module, final=True)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.every_checkpoint:
            self.score_now(trainer, pl_module, final=False)

    # ---- scoring ----------------------------------------------------------------------------------------
    def classifier(self, pl_module: LightningModule) -> nn.Module:
        model = getattr(pl_module, self.model_attribute) if self.model_attribute else pl_module
        if not isinstance(model, nn.Module):
            raise SpecError(f"{self.model_attribute!r} of the module is not a torch.nn.Module", field="model")
        return model

    def score_now(self, trainer: Trainer, pl_module: LightningModule, *, final: bool) -> ScoreResult | None:
        """Score the current weights, log ``gscore/<measure>`` at the trainer's global step; returns the result
        (None on other ranks than zero, or when this step was scored already)."""
        step = int(trainer.global_step)
        if not trainer.is_global_zero or step in self._scored_steps:
            return None
        self._scored_steps.add(step)
        model = self.classifier(pl_module)
        was_training = model.training
        try:
            result = (
                self._score_remotely(trainer, pl_module, model, final)
                if self.client
                else self._score_here(model)
            )
        finally:
            model.train(was_training)
        self.results.append(result)
        metrics = {
            f"{LOG_PREFIX}/{name}": value for name, value in result.scores.items() if value is not None
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()
        return result

    def _score_here(self, model: nn.Module) -> ScoreResult:
        return score(
            model,
            self.dataset,
            self.measures,
            params=self.params,
            split=self.split,
            samples_per_class=self.samples_per_class,
            seed=self.seed,
            device=self.device,
        )

    def _metric(self, trainer: Trainer, name: str | None) -> float | None:
        value = trainer.callback_metrics.get(name) if name else None
        return None if value is None else float(value)

    def _score_remotely(
        self, trainer: Trainer, pl_module: LightningModule, model: nn.Module, final: bool
    ) -> ScoreResult:
        from gscore.inputs.checkpoints.loading import save_safetensors

        assert self.client is not None and self.arch is not None
        name = self.model_name or "model"
        if not final:
            name = f"{name}-step{trainer.global_step}"
        hyperparameters = (
            self.hyperparameters
            if self.hyperparameters is not None
            else scalar_hyperparameters(pl_module.hparams)
        )
        with tempfile.TemporaryDirectory(prefix="gscore-lightning-") as folder:
            path = Path(folder) / f"{name}.safetensors"
            save_safetensors(model, path)
            job = self.client.submit(
                path,
                self.arch,
                self.dataset,
                split=self.split,
                measures=self.measures,
                params=self.params,
                samples_per_class=self.samples_per_class,
                seed=self.seed,
                collection=self.collection,
                model_name=name if self.collection else None,
                hyperparameters=hyperparameters if self.collection else None,
                test_accuracy=self._metric(trainer, self.test_accuracy_metric),
                train_accuracy=self._metric(trainer, self.train_accuracy_metric),
            )
        job = self.client.wait(job["id"], timeout=self.timeout)
        if job["state"] != "succeeded":
            error = job.get("error") or {}
            raise RuntimeError(f"gscore job {job['id']} {job['state']}: {error.get('detail', '')}")
        result = job["result"]
        return ScoreResult(result["scores"], result["status"], {**result["meta"], "job_id": job["id"]})
