"""gscore: generalization scores for trained image classifiers.

The math lives in plain modules (``gscore.measures``, ``gscore.sharpness``,
``gscore.ranking``), usable from a notebook; ``gscore.pipeline`` turns a
checkpoint plus an architecture spec and a dataset into scores.
"""

__version__ = "0.1.0"
