"""``gscore.integrations.lightning.GScoreCallback`` inside a real ``lightning.Trainer`` fit of a tiny digits CNN:
the values it logs (to an in-memory logger and to Lightning's CSVLogger) equal ``gscore.score`` on the same
weights, at the end of fit and at each checkpoint save (scored from the saved checkpoint file itself).
Remote scoring through the service is in tests/stack/test_pipelines_stack.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

lightning = pytest.importorskip("lightning")

import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from pipelines_lib import (  # noqa: E402
    MEASURES,
    PROBE,
    DigitsClassifier,
    MemoryLogger,
    digits_loader,
    reference,
    trainer,
)

from gscore.errors import SpecError  # noqa: E402
from gscore.integrations.lightning import GScoreCallback  # noqa: E402


def test_scores_logged_at_the_end_of_fit_equal_gscore_score(tmp_path: Path) -> None:
    memory, csv_logger = MemoryLogger(), CSVLogger(tmp_path, name="csv")
    callback = GScoreCallback("digits", MEASURES, model_attribute="model", device="cpu", **PROBE)
    module = DigitsClassifier()
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer(tmp_path, [callback], [memory, csv_logger], max_steps=3).fit(module, digits_loader())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, module.model.parameters(), strict=True)
    )  # trained

    expected = reference(module.model)
    assert all(value is not None for value in expected.values())
    assert memory.gscore_values() == {3: expected}
    assert callback.results[-1].scores == {name.split("/")[1]: v for name, v in expected.items()}
    assert module.model.training  # the callback left the model's mode as it found it

    with open(Path(csv_logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("gscore/c3")]
    assert len(rows) == 1 and int(rows[0]["step"]) == 3
    assert {name: float(rows[0][name]) for name in expected} == pytest.approx(expected, rel=1e-12)


def test_every_checkpoint_save_is_scored_from_its_weights(tmp_path: Path) -> None:
    memory = MemoryLogger()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    callback = GScoreCallback(
        "digits", MEASURES, model_attribute="model", device="cpu", every_checkpoint=True, **PROBE
    )
    trainer(tmp_path, [saver, callback], [memory], max_steps=4).fit(DigitsClassifier(), digits_loader())
    logged = memory.gscore_values()
    assert sorted(logged) == [2, 4]  # the fit's end (step 4) was scored once, at its checkpoint save
    for step in (2, 4):
        (path,) = (tmp_path / "ckpt").glob(f"*step={step}.ckpt")
        saved = DigitsClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        assert logged[step] == reference(saved.model)
    assert logged[2] != logged[4]


def test_remote_options_are_checked_up_front() -> None:
    with pytest.raises(SpecError, match="arch"):
        GScoreCallback("digits", client=object())  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="client"):
        GScoreCallback("digits", collection="sweep")
