"""gscore: generalization scores for trained image classifiers.

The math lives in plain modules (``gscore.measures.clustering``, ``gscore.measures.sharpness``,
``gscore.ranking.kendall``), usable from a notebook; ``gscore.pipeline`` turns a
checkpoint plus an architecture spec and a dataset into scores, and
``gscore.score(model, data, measures=[...])`` scores an in-memory model.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["score"]


def __getattr__(name: str) -> Any:
    """``gscore.score`` (:func:`gscore.scoring.score`), imported on first use so that ``import gscore`` stays
    light (the HTTP API process never loads torch)."""
    if name == "score":
        from gscore.scoring import score

        return score
    raise AttributeError(f"module 'gscore' has no attribute {name!r}")
