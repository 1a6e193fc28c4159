"""The measures: the table every route reads (:mod:`gscore.measures.table`, its types in
:mod:`gscore.measures.types`), the inputs a run prepares once (:mod:`gscore.measures.context`), and one module
of plain functions per family:

- :mod:`gscore.measures.clustering`: c1-c4, intraclass clustering;
- :mod:`gscore.measures.sharpness`: magnitude-aware sharpness;
- :mod:`gscore.measures.intrinsic_dimension`: TwoNN intrinsic dimension of representations;
- :mod:`gscore.measures.tangent_alignment`: tangent-feature alignment.

The c1-c4 functions are re-exported here (``from gscore.measures import neuron_variance``). They are imported on
first use, so that reading the table (the HTTP API's ``/v1/measures``) never imports torch.
"""

from __future__ import annotations

from typing import Any

_CLUSTERING = ("layer_silhouette", "layer_variance", "neuron_variance", "subclass_selectivity", "topk_mean")
__all__ = list(_CLUSTERING)


def __getattr__(name: str) -> Any:
    if name in _CLUSTERING:
        from gscore.measures import clustering

        return getattr(clustering, name)
    raise AttributeError(f"module 'gscore.measures' has no attribute {name!r}")
