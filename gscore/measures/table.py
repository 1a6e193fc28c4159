"""The measure table: every measure's name, orientation, parameters, needs and the function computing it.

The one place the CLI, the pipeline, the service (``/v1/measures``) and the ranking code look measures
up. Adding a measure is its module of plain functions plus one entry here: the pipeline reads ``needs``
to prepare the inputs once (one extraction pass for every activation measure, one training sample for
every sharpness measure with the same size and seed) and calls ``compute(ctx, params)``
(:mod:`gscore.measures.types`). Orientation is +1 when a higher value predicts better generalization,
-1 when it predicts worse. Reading this module imports no torch: functions are named, imported on use.
"""

from __future__ import annotations

from gscore.measures.types import FAMILIES, Measure

__all__ = [
    "CLUSTERING_MEASURES",
    "DEFAULT_MEASURES",
    "FAMILIES",
    "MEASURES",
    "MeasureInfo",
    "expand_measure_names",
    "family_members",
    "orientation",
]

MeasureInfo = Measure  # the name earlier releases used for an entry

# Shared by the four sharpness measures: the size of the class-balanced training sample, bisection
# steps, the seed of the noise/sample, the accuracy drop sought and the stopping tolerance.
_SHARPNESS_PARAMETERS = {"samples": 2000, "steps": 15, "seed": 0, "target_drop": 0.1, "tolerance": 0.01}
_RANDOM_PARAMETERS = {**_SHARPNESS_PARAMETERS, "draws": 10, "upper": 2.0}
_WORST_PARAMETERS = {**_SHARPNESS_PARAMETERS, "upper": 0.25, "ascent_steps": 10, "ascent_lr": 0.2}

_ACTIVATIONS = frozenset({"activations", "probe"})
_HIERARCHY = frozenset({"activations", "probe", "hierarchy"})
_TRAINING = frozenset({"training_sample", "model"})

_ENTRIES = [
    Measure(
        "c1",
        "neuron-level subclass selectivity",
        +1,
        _HIERARCHY,
        "activations",
        "gscore.measures.clustering:c1_measure",
        {"k": 30},
        description="median over subclasses of the top-k mean of neuron selectivities",
        family="clustering",
    ),
    Measure(
        "c2",
        "layer-level silhouette",
        +1,
        _HIERARCHY,
        "activations",
        "gscore.measures.clustering:c2_measure",
        {"k": 5},
        description="median over subclasses of the top-k mean over layers of cosine silhouette values",
        family="clustering",
    ),
    Measure(
        "c3",
        "neuron-level variance",
        +1,
        _ACTIVATIONS,
        "activations",
        "gscore.measures.clustering:c3_measure",
        {"k": 30},
        description="mean over classes of the top-k mean of std_class / std_all per neuron",
        family="clustering",
    ),
    Measure(
        "c4",
        "layer-level variance",
        +1,
        _ACTIVATIONS,
        "activations",
        "gscore.measures.clustering:c4_measure",
        {"k": 5},
        description="mean over classes of the top-k mean over layers of the std of cosine distances ratio",
        family="clustering",
    ),
    Measure(
        "random_sharpness",
        "1/sigma' (random, all weights)",
        -1,
        _TRAINING,
        "perturbation",
        "gscore.measures.sharpness:random_sharpness_measure",
        dict(_RANDOM_PARAMETERS),
        description="inverse of the largest magnitude-aware Gaussian noise scale that costs 0.1 training accuracy",
        family="sharpness",
    ),
    Measure(
        "worst_sharpness",
        "1/alpha' (worst case, all weights)",
        -1,
        _TRAINING,
        "perturbation",
        "gscore.measures.sharpness:worst_sharpness_measure",
        dict(_WORST_PARAMETERS),
        description="inverse of the largest magnitude-aware box radius whose worst case costs 0.1 training accuracy",
        family="sharpness",
    ),
    Measure(
        "random_sharpness_kernels",
        "1/sigma'' (random, kernels, batch statistics)",
        -1,
        _TRAINING,
        "perturbation",
        "gscore.measures.sharpness:random_sharpness_kernels_measure",
        dict(_RANDOM_PARAMETERS),
        description="as 1/sigma' perturbing only conv/linear kernels, normalization in batch-statistics mode",
        family="sharpness",
    ),
    Measure(
        "worst_sharpness_kernels",
        "1/alpha'' (worst case, kernels, batch statistics)",
        -1,
        _TRAINING,
        "perturbation",
        "gscore.measures.sharpness:worst_sharpness_kernels_measure",
        dict(_WORST_PARAMETERS),
        description="as 1/alpha' perturbing only conv/linear kernels, normalization in batch-statistics mode",
        family="sharpness",
    ),
]

# Intrinsic dimension of activations (Brown et al., "Relating regularization and generalization through the intrinsic dimension of activations", 2022): TwoNN on held-out data by default.
_ID_PARAMETERS = {"resamples": 20, "fraction": 0.9, "samples": None, "split": "test", "seed": 0}
_ID_RULES = {"resamples": "count0", "fraction": "fraction", "samples": "optional_count", "split": "split"}
_REPRESENTATIONS = frozenset({"representations", "probe"})

_ENTRIES += [
    Measure(
        "llid",
        "last-layer intrinsic dimension (TwoNN)",
        -1,
        _REPRESENTATIONS,
        "representations",
        "gscore.measures.intrinsic_dimension:llid_measure",
        dict(_ID_PARAMETERS),
        dict(_ID_RULES),
        description="TwoNN intrinsic dimension of the input of the model's last nn.Linear call, mean over "
        "seeded resamples",
        family="intrinsic_dimension",
    ),
    Measure(
        "pid",
        "peak intrinsic dimension over stages (TwoNN)",
        +1,
        _REPRESENTATIONS,
        "representations",
        "gscore.measures.intrinsic_dimension:pid_measure",
        dict(_ID_PARAMETERS),
        dict(_ID_RULES),
        description="maximum TwoNN intrinsic dimension over the stage outputs and the last-layer input",
        family="intrinsic_dimension",
    ),
    Measure(
        "id_ratio",
        "peak / last-layer intrinsic dimension",
        +1,
        _REPRESENTATIONS,
        "representations",
        "gscore.measures.intrinsic_dimension:id_ratio_measure",
        dict(_ID_PARAMETERS),
        dict(_ID_RULES),
        description="pid / llid",
        family="intrinsic_dimension",
    ),
]

# Tangent-feature alignment (Baratin et al., "Implicit regularization via neural feature alignment", AISTATS 2021): the tangent kernel of a seeded class-balanced training sample.
_NTK_PARAMETERS = {"samples": 100, "split": "train", "seed": 0, "max_outputs": 20, "memory_budget_mb": 1024.0}
_NTK_RULES = {"split": "split"}
_TANGENT = frozenset({"model", "probe"})

_ENTRIES += [
    Measure(
        "ntk_alignment",
        "centred tangent-kernel / target alignment",
        +1,
        _TANGENT,
        "tangent_kernel",
        "gscore.measures.tangent_alignment:ntk_alignment_measure",
        dict(_NTK_PARAMETERS),
        dict(_NTK_RULES),
        description="y^T K_c y / (||K_c||_F ||y||^2) of the tangent kernel over all trainable parameters",
        family="tangent",
    ),
    Measure(
        "ntk_layer_alignment",
        "mean per-module tangent-kernel alignment",
        +1,
        _TANGENT,
        "tangent_kernel",
        "gscore.measures.tangent_alignment:ntk_layer_alignment_measure",
        dict(_NTK_PARAMETERS),
        dict(_NTK_RULES),
        description="the alignment of each module's tangent kernel, averaged over modules with parameters",
        family="tangent",
    ),
    Measure(
        "ntk_effective_rank",
        "effective rank of the centred tangent kernel",
        -1,
        _TANGENT,
        "tangent_kernel",
        "gscore.measures.tangent_alignment:ntk_effective_rank_measure",
        dict(_NTK_PARAMETERS),
        dict(_NTK_RULES),
        description="effective rank of the centred tangent kernel; trace ratios T_40/T_80/T_160 and Tr K / N in meta",
        family="tangent",
    ),
]

# Peer measures (docs/measures.md, "Peer measures"): output margin and norms of the BatchNorm-folded network,
# distances to an initial checkpoint, the PGDL winners' representation measures, WeightWatcher's metrics.
_LOGITS = frozenset({"logits", "probe"})
_WEIGHTS = frozenset({"model", "probe"})
_LOGITS_AND_WEIGHTS = _LOGITS | _WEIGHTS
_INITIAL = frozenset({"model", "probe", "initial_model"})


def _norm(name: str, title: str, orientation: int, needs: frozenset[str], description: str) -> Measure:
    return Measure(
        name,
        title,
        orientation,
        needs,
        "weights",
        f"gscore.measures.norms:{name}_measure",
        description=description,
        family="norm",
    )


def _spectral(name: str, title: str) -> Measure:
    return Measure(
        name,
        title,
        -1,
        frozenset({"model"}),
        "weights",
        f"gscore.measures.spectral:{name}_measure",
        description=f"{title} from the summary of weightwatcher's analyze() (optional extra "
        "gscore[weightwatcher])",
        family="spectral",
    )


_ENTRIES += [
    _norm(
        "margin",
        "output margin (10th percentile)",
        +1,
        _LOGITS,
        "k-th smallest label-logit minus largest other logit on the probe set, k = max(1, N // 10)",
    ),
    _norm(
        "spectral_product_over_margin",
        "log prod ||W||_2^2 / margin^2",
        -1,
        _LOGITS_AND_WEIGHTS,
        "sum of log squared spectral norms of the BatchNorm-folded weights minus 2 log margin",
    ),
    _norm(
        "frobenius_product_over_margin",
        "log prod ||W||_F^2 / margin^2",
        -1,
        _LOGITS_AND_WEIGHTS,
        "sum of log squared Frobenius norms of the BatchNorm-folded weights minus 2 log margin",
    ),
    _norm(
        "path_norm",
        "path norm",
        -1,
        _WEIGHTS,
        "sqrt of the summed output of the squared folded network on an all-ones input",
    ),
    _norm(
        "path_norm_over_margin",
        "path norm^2 / margin^2",
        -1,
        _LOGITS_AND_WEIGHTS,
        "squared path norm over the squared margin",
    ),
    _norm(
        "param_norm",
        "sum ||W||_F^2",
        -1,
        _WEIGHTS,
        "sum of squared Frobenius norms of the BatchNorm-folded weights",
    ),
    _norm(
        "fro_over_spec",
        "sum ||W||_F^2 / ||W||_2^2",
        -1,
        _WEIGHTS,
        "sum over layers of the squared Frobenius over squared spectral norm of the folded weights",
    ),
    _norm(
        "distance_to_init",
        "sum ||W - W0||_F^2",
        -1,
        _INITIAL,
        "squared Frobenius distance of the folded weights to the initial checkpoint's (needs it)",
    ),
    _norm(
        "layer_rotation",
        "mean layer rotation (cosine distance to init)",
        +1,
        _INITIAL,
        "mean over conv/linear kernels of 1 - cos(w, w0) to the initial checkpoint (needs it)",
    ),
    Measure(
        "davies_bouldin",
        "Davies-Bouldin index of the class clusters",
        -1,
        frozenset({"last_linear", "probe"}),
        "representation",
        "gscore.measures.representation:davies_bouldin_measure",
        {"layer": "penultimate"},
        {"layer": "layer"},
        description="scikit-learn's davies_bouldin_score of the probe's classes in the last nn.Linear input "
        "(layer=penultimate) or the pooled first ReLU output (layer=first)",
        family="representation",
    ),
    Measure(
        "mixup_loss",
        "label-wise mixup loss",
        -1,
        frozenset({"model", "probe"}),
        "representation",
        "gscore.measures.representation:mixup_loss_measure",
        {"per_class": 10, "seed": 0},
        description="mean cross-entropy of the class label on midpoints of same-class probe pairs",
        family="representation",
    ),
    _spectral("ww_alpha", "WeightWatcher alpha"),
    _spectral("ww_alpha_weighted", "WeightWatcher alpha-hat (weighted alpha)"),
    _spectral("ww_stable_rank", "WeightWatcher stable rank"),
    _spectral("ww_log_spectral_norm", "WeightWatcher log spectral norm"),
]

MEASURES: dict[str, Measure] = {m.name: m for m in _ENTRIES}

CLUSTERING_MEASURES: tuple[str, ...] = ("c1", "c2", "c3", "c4")
# The cheap baselines (at most one forward pass over the probe set) run beside c1-c4 by default.
NORM_BASELINES: tuple[str, ...] = (
    "margin",
    "spectral_product_over_margin",
    "frobenius_product_over_margin",
    "path_norm",
    "path_norm_over_margin",
    "param_norm",
    "fro_over_spec",
)
DEFAULT_MEASURES: tuple[str, ...] = CLUSTERING_MEASURES + NORM_BASELINES + ("davies_bouldin",)


def family_members(family: str) -> tuple[str, ...]:
    """The measures of ``family`` (one of ``FAMILIES``), in table order."""
    return tuple(m.name for m in _ENTRIES if m.family == family)


def expand_measure_names(names: list[str]) -> list[str]:
    """Measure names with family names (``norm``) and ``all`` replaced by their members, in order, without
    duplicates; unknown names are kept (the caller reports them)."""
    expanded: list[str] = []
    for name in names:
        if name == "all":
            expanded += list(MEASURES)
        elif name in FAMILIES and name not in MEASURES:
            expanded += family_members(name)
        else:
            expanded.append(name)
    return list(dict.fromkeys(expanded))


def orientation(name: str) -> int:
    """+1 or -1; unknown measures (user-supplied scores) default to +1."""
    info = MEASURES.get(name)
    return info.orientation if info else 1
