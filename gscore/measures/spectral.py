"""WeightWatcher's spectral metrics (Martin, Peng & Mahoney 2021) from the ``weightwatcher`` package itself.

    summary = weightwatcher_summary(model)   # {"alpha", "alpha_weighted", "stable_rank", "log_spectral_norm", ...}

``ww_alpha``, ``ww_alpha_weighted``, ``ww_stable_rank`` and ``ww_log_spectral_norm`` are the summary of
``WeightWatcher(model=...).analyze()`` with its default options, on the model as loaded (the prepended input
normalization has no weights). The package is the optional extra ``gscore[weightwatcher]``; without it the
measures are ``undefined``. Its console output, warnings and logging set-up (it calls
``logging.basicConfig`` on import) are kept out of ours.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

from torch import nn

from gscore.measures.types import MeasureOutcome, MeasureUndefined

__all__ = ["SUMMARY_KEYS", "quiet_weightwatcher", "weightwatcher_summary"]

SUMMARY_KEYS = {
    "ww_alpha": "alpha",
    "ww_alpha_weighted": "alpha_weighted",
    "ww_stable_rank": "stable_rank",
    "ww_log_spectral_norm": "log_spectral_norm",
}
EXTRA_HINT = "install the optional extra: pip install 'gscore[weightwatcher]'"


@contextlib.contextmanager
def quiet_weightwatcher() -> Iterator[io.StringIO]:
    """Swallow stdout/stderr, warnings and log records of the block; the root logger's handlers and level
    are restored afterwards. Yields the captured console text."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ww_logger = logging.getLogger("weightwatcher")
    ww_state = (ww_logger.level, ww_logger.propagate, ww_logger.disabled)
    captured = io.StringIO()
    try:
        ww_logger.disabled = True
        ww_logger.propagate = False
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
        ):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        ww_logger.level, ww_logger.propagate, ww_logger.disabled = ww_state


def weightwatcher_summary(model: nn.Module) -> dict[str, float]:
    """The summary of ``weightwatcher.WeightWatcher(model=model).analyze()`` with default options, as
    floats. Raises ImportError when the package is missing."""
    with quiet_weightwatcher():
        import weightwatcher

        watcher = weightwatcher.WeightWatcher(model=model)
        details = watcher.analyze()
        summary = watcher.get_summary(details)
    return {key: float(value) for key, value in summary.items()}


def _summary(ctx: Any) -> dict[str, float]:
    if "weightwatcher" not in ctx.cache:
        try:
            ctx.cache["weightwatcher"] = weightwatcher_summary(ctx.model)
        except ImportError:
            ctx.cache["weightwatcher"] = MeasureUndefined(
                f"the weightwatcher package is not installed: {EXTRA_HINT}"
            )
    cached = ctx.cache["weightwatcher"]
    if isinstance(cached, MeasureUndefined):
        raise cached
    return cached


def _measure(name: str, ctx: Any) -> MeasureOutcome:
    summary = _summary(ctx)
    key = SUMMARY_KEYS[name]
    value = summary.get(key, math.nan)
    if not math.isfinite(value):
        raise MeasureUndefined(
            f"weightwatcher's summary has no finite {key} for this model (got {value}); it analyzes conv and "
            "linear layers with enough rows and columns for a power-law fit"
        )
    return MeasureOutcome(value, {"summary": summary})


def ww_alpha_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``ww_alpha`` (-1): the mean power-law exponent of the layers' eigenvalue spectra."""
    return _measure("ww_alpha", ctx)


def ww_alpha_weighted_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``ww_alpha_weighted`` (-1): the mean of alpha * log10(largest eigenvalue)."""
    return _measure("ww_alpha_weighted", ctx)


def ww_stable_rank_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``ww_stable_rank`` (-1): the mean stable rank ||W||_F^2 / ||W||_2^2."""
    return _measure("ww_stable_rank", ctx)


def ww_log_spectral_norm_measure(ctx: Any, params: dict[str, Any]) -> MeasureOutcome:
    """``ww_log_spectral_norm`` (-1): the mean log10 of the largest eigenvalue."""
    return _measure("ww_log_spectral_norm", ctx)
