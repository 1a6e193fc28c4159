"""Rankings of a collection of models and the Kendall coefficients that score each measure (plain numpy).

- :mod:`gscore.ranking.kendall`: tau-a, granulated Kendall, the training-accuracy protocol, ``rank_collection``;
- :mod:`gscore.ranking.bootstrap`: pair matrices and seeded bootstrap intervals;
- :mod:`gscore.ranking.records`: the model record, its validation, reading a collection file;
- :mod:`gscore.ranking.output`: tables, per-measure rankings and CSV of a ranking document;
- :mod:`gscore.ranking.frames`: ranking and collection documents as pandas-ready dicts;
- :mod:`gscore.ranking.plots`: measure-versus-target figures (matplotlib, Agg).
"""

from gscore.ranking.kendall import *  # noqa: F403  (the public names of gscore.ranking.kendall)
from gscore.ranking.kendall import __all__  # noqa: F401
