"""The peer measures against independent references: a brute-force margin, SVD spectral norms (numpy), a
BatchNorm-folded copy built by hand, a hand-squared network for the path norm, scikit-learn's
davies_bouldin_score, mixup over explicit pairs, cosine distances from state dicts and weightwatcher itself;
on a model with BatchNorm, one with a residual add, and one converted from ONNX."""

from __future__ import annotations

import itertools
import logging
import math
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import davies_bouldin_score
from torch import nn

import gscore
from gscore.measures.batchnorm_folding import fold_batchnorms, weight_matrices
from gscore.measures.table import DEFAULT_MEASURES, MEASURES, expand_measure_names, family_members
from gscore.pipeline import ScoreRequest, resolve_measures

CLASSES = 4
NORMS = [
    "margin",
    "spectral_product_over_margin",
    "frobenius_product_over_margin",
    "path_norm",
    "path_norm_over_margin",
    "param_norm",
    "fro_over_spec",
]


class BNNet(nn.Module):
    """conv -> BN -> ReLU -> pool -> conv (no bias) -> BN -> ReLU -> mean -> linear -> BN1d -> ReLU -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 16)
        self.bn3 = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.relu(self.bn2(self.conv2(h))).mean(dim=(2, 3))
        return self.head(F.relu(self.bn3(self.fc(h))))


class ResidualNet(nn.Module):
    """A residual add whose sum goes into a BatchNorm (``after_add``): that BatchNorm cannot be folded."""

    def __init__(self, bn_after_add: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.after_add = nn.BatchNorm2d(6) if bn_after_add else nn.Identity()
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = F.relu(self.after_add(h + self.conv(h)))
        return self.head(h.amax(dim=(2, 3)))


class MLP(nn.Module):
    def __init__(self, batchnorm: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 12)
        self.bn = nn.BatchNorm1d(12) if batchnorm else nn.Identity()
        self.fc2 = nn.Linear(12, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x.flatten(1)))))


def trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine values, eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()


def data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.arange(n) % CLASSES


def fitted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Labels the model gets right on ``x`` but a few (so that the margin is positive)."""
    with torch.no_grad():
        return model(x).argmax(1)


def score(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, measures: list[str], **kwargs
) -> gscore.ScoreResult:
    return gscore.score(model, (x, y), measures, device="cpu", **kwargs)


# ---- independent references ------------------------------------------------------------------------------
def brute_force_gamma(logits: np.ndarray, labels: np.ndarray) -> float:
    margins = []
    for row, label in zip(logits, labels, strict=True):
        others = [row[c] for c in range(len(row)) if c != label]
        margins.append(row[label] - max(others))
    return sorted(margins)[max(1, len(margins) // 10) - 1]


def folded_by_hand(model: BNNet) -> list[np.ndarray]:
    """W' = s W with s = gamma / sqrt(var + eps), per output channel, as [out, in * kh * kw] matrices."""
    matrices = []
    for layer, bn in ((model.conv1, model.bn1), (model.conv2, model.bn2), (model.fc, model.bn3)):
        w = layer.weight.detach().double().numpy()
        s = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
        matrices.append((w * s.reshape(-1, *([1] * (w.ndim - 1)))).reshape(w.shape[0], -1))
    matrices.append(model.head.weight.detach().double().numpy())
    return matrices


def numpy_norm_measures(matrices: list[np.ndarray], gamma: float) -> dict[str, float]:
    spectral = [np.linalg.svd(w, compute_uv=False)[0] for w in matrices]
    fro = [np.sqrt((w**2).sum()) for w in matrices]
    return {
        "spectral_product_over_margin": sum(2 * np.log(s) for s in spectral) - 2 * np.log(gamma),
        "frobenius_product_over_margin": sum(2 * np.log(f) for f in fro) - 2 * np.log(gamma),
        "param_norm": sum(f**2 for f in fro),
        "fro_over_spec": sum((f / s) ** 2 for f, s in zip(fro, spectral, strict=True)),
    }


# ---- folding -----------------------------------------------------------------------------------------------
def test_folded_weights_equal_the_hand_folded_copy_and_compute_the_same_logits() -> None:
    torch.manual_seed(0)
    model = trained_like(BNNet())
    x, _ = data()
    folded = fold_batchnorms(model, x[:2])
    assert folded.model is not None
    assert folded.folded == [("conv1", "bn1"), ("conv2", "bn2"), ("fc", "bn3")]
    got = [w.numpy() for _name, w in weight_matrices(folded.model)]
    for mine, reference in zip(got, folded_by_hand(model), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(folded.model(x), model(x), atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is unchanged


def test_residual_add_folds_before_the_add_and_refuses_a_batchnorm_after_it() -> None:
    torch.manual_seed(0)
    x, _ = data()
    foldable = trained_like(ResidualNet(bn_after_add=False))
    folded = fold_batchnorms(foldable, x[:2])
    assert folded.folded == [("stem", "bn")]
    with torch.no_grad():
        torch.testing.assert_close(folded.model(x), foldable(x), atol=1e-5, rtol=1e-5)

    unfoldable = trained_like(ResidualNet(bn_after_add=True))
    result = score(unfoldable, x, fitted(unfoldable, x), NORMS)
    assert result.status["margin"]["status"] == "ok"  # the margin needs no folding
    for name in NORMS[1:]:
        status = result.status[name]
        assert status["status"] == "undefined" and result.scores[name] is None, name
        assert "'after_add'" in status["reason"] and "cannot be folded" in status["reason"]


# ---- margin and norms through gscore.score -------------------------------------------------------------------
def test_margin_and_norm_measures_equal_the_references_on_a_batchnorm_model() -> None:
    torch.manual_seed(0)
    model = trained_like(BNNet())
    x, _ = data()
    y = fitted(model, x)
    y[:3] = (y[:3] + 1) % CLASSES  # a few wrong labels: negative margins below the 10th percentile
    result = score(model, x, y, NORMS)
    with torch.no_grad():
        gamma = brute_force_gamma(model(x).double().numpy(), y.numpy())
    assert result.scores["margin"] == pytest.approx(gamma, rel=1e-6)
    assert gamma > 0
    for name, value in numpy_norm_measures(folded_by_hand(model), gamma).items():
        assert result.scores[name] == pytest.approx(value, rel=1e-6), name
    assert result.meta["batchnorm_folding"] == "3 folded"
    assert set(result.status) == set(NORMS) and all(s["status"] == "ok" for s in result.status.values())


def test_path_norm_equals_the_hand_squared_network() -> None:
    torch.manual_seed(0)
    model = trained_like(MLP(batchnorm=True))
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = fitted(model, x)
    result = score(model, x, y, ["path_norm", "path_norm_over_margin", "margin"])
    # fold by hand, square every parameter, run on ones
    bn = model.bn
    s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w1 = model.fc1.weight.detach().double() * s[:, None]
    b1 = s * (model.fc1.bias.detach().double() - bn.running_mean.double()) + bn.bias.detach().double()
    w2, b2 = model.fc2.weight.detach().double(), model.fc2.bias.detach().double()
    hidden = torch.relu(w1.pow(2) @ torch.ones(64, dtype=torch.float64) + b1.pow(2))
    p = float((w2.pow(2) @ hidden + b2.pow(2)).sum())
    assert result.scores["path_norm"] == pytest.approx(math.sqrt(p), rel=1e-6)
    gamma = result.scores["margin"]
    assert gamma > 0
    assert result.scores["path_norm_over_margin"] == pytest.approx(p / gamma**2, rel=1e-6)


def test_no_batchnorm_folds_nothing_and_says_so() -> None:
    torch.manual_seed(0)
    model = MLP().eval()
    x, _ = data()
    result = score(model, x, fitted(model, x), ["param_norm"])
    assert result.meta["batchnorm_folding"] == "the model has no BatchNorm: nothing folded"
    reference = sum(float((m.weight.detach().double() ** 2).sum()) for m in (model.fc1, model.fc2))
    assert result.scores["param_norm"] == pytest.approx(reference, rel=1e-12)


def test_a_non_positive_margin_makes_the_over_margin_measures_undefined_not_infinite() -> None:
    torch.manual_seed(0)
    model = MLP().eval()
    x, _ = data()
    wrong = (fitted(model, x) + 1) % CLASSES  # every label wrong: every margin < 0
    result = score(model, x, wrong, NORMS)
    assert result.status["margin"]["status"] == "ok" and result.scores["margin"] < 0
    assert result.status["margin"]["warnings"]
    for name in ("spectral_product_over_margin", "frobenius_product_over_margin", "path_norm_over_margin"):
        assert result.status[name]["status"] == "undefined" and result.scores[name] is None
        assert "not positive" in result.status[name]["reason"]
    for name in ("path_norm", "param_norm", "fro_over_spec"):
        assert result.status[name]["status"] == "ok"


def test_onnx_converted_model_gives_the_folded_torch_models_norms(tmp_path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnx2pytorch")
    from test_onnx_models import MAX_BYTES, NotInAnyZoo, export
    from test_onnx_models import trained_like as onnx_trained_like

    from gscore.inputs.onnx_models import load_onnx_model

    torch.manual_seed(0)
    model = onnx_trained_like(NotInAnyZoo(num_classes=CLASSES))
    x, _ = data()
    y = fitted(model, x)
    converted = load_onnx_model(export(model, x[:4], tmp_path / "m.onnx", False), max_bytes=MAX_BYTES)
    names = ["margin", "spectral_product_over_margin", "param_norm", "fro_over_spec", "path_norm"]
    ours = score(converted, x, y, names)
    reference = score(model, x, y, names)
    for name in names:
        assert ours.status[name]["status"] == "ok", ours.status[name]
        assert ours.scores[name] == pytest.approx(reference.scores[name], rel=1e-4), name


# ---- initial checkpoint ------------------------------------------------------------------------------------------
def test_distance_to_init_and_layer_rotation_from_the_state_dicts() -> None:
    torch.manual_seed(0)
    initial = BNNet().eval()  # fresh BatchNorm statistics, as at initialization
    torch.manual_seed(5)
    final = trained_like(BNNet(), seed=2)
    x, _ = data()
    result = score(final, x, fitted(final, x), ["distance_to_init", "layer_rotation"], initial=initial)
    final_state, initial_state = final.state_dict(), initial.state_dict()
    kernels = ["conv1.weight", "conv2.weight", "fc.weight", "head.weight"]
    cosines = []
    for key in kernels:
        a, b = final_state[key].double().numpy().ravel(), initial_state[key].double().numpy().ravel()
        cosines.append(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert result.scores["layer_rotation"] == pytest.approx(np.mean(cosines), rel=1e-9)
    hand_final = folded_by_hand(final)
    hand_initial = folded_by_hand(initial)
    distance = sum(((a - b) ** 2).sum() for a, b in zip(hand_final, hand_initial, strict=True))
    assert result.scores["distance_to_init"] == pytest.approx(distance, rel=1e-6)
    assert result.meta["initial_checkpoint"] is True


def test_without_an_initial_checkpoint_the_reason_says_what_to_send() -> None:
    model = MLP().eval()
    x, _ = data()
    result = score(model, x, fitted(model, x), ["margin", "distance_to_init", "layer_rotation"])
    for name in ("distance_to_init", "layer_rotation"):
        assert result.status[name]["status"] == "undefined"
        reason = result.status[name]["reason"]
        assert "initial_checkpoint" in reason and "--initial-checkpoint" in reason and "initial=" in reason


# ---- representation measures ---------------------------------------------------------------------------------------
def test_davies_bouldin_equals_sklearn_on_both_layers() -> None:
    torch.manual_seed(0)
    model = trained_like(BNNet())
    x = torch.randn(60, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    y = torch.arange(60) % CLASSES
    penultimate = score(model, x, y, ["davies_bouldin"])
    first = score(model, x, y, ["davies_bouldin"], params={"davies_bouldin": {"layer": "first"}})
    with torch.no_grad():
        h = F.relu(model.bn1(model.conv1(x)))
        first_features = F.max_pool2d(h, 4, 4).flatten(1)
        h = F.relu(model.bn2(model.conv2(F.max_pool2d(h, 2)))).mean(dim=(2, 3))
        penultimate_features = F.relu(model.bn3(model.fc(h)))
    assert first_features.shape[1] == 6 * 4 * 4
    expected = davies_bouldin_score(penultimate_features.double().numpy(), y.numpy())
    assert penultimate.scores["davies_bouldin"] == pytest.approx(expected, rel=1e-5)
    expected_first = davies_bouldin_score(first_features.double().numpy(), y.numpy())
    assert first.scores["davies_bouldin"] == pytest.approx(expected_first, rel=1e-5)
    assert first.meta["measures"]["davies_bouldin"]["layer"] == "first"


def test_davies_bouldin_layer_parameter_is_checked() -> None:
    from gscore.errors import SpecError

    model = MLP().eval()
    x, y = data()
    with pytest.raises(SpecError, match="penultimate, first"):
        score(model, x, y, ["davies_bouldin"], params={"davies_bouldin": {"layer": "last"}})


def test_mixup_loss_equals_explicit_pairs_and_skips_a_one_sample_class() -> None:
    torch.manual_seed(0)
    model = trained_like(BNNet())
    x = torch.randn(25, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    y = torch.tensor(
        [0] * 12 + [1] * 7 + [2] * 5 + [3]
    )  # class 3 has one sample; class 0 more than per_class
    result = score(model, x, y, ["mixup_loss"], params={"mixup_loss": {"per_class": 10, "seed": 3}})
    from gscore.measures.representation import within_class_samples

    chosen = within_class_samples(y, 10, 3)
    assert len(chosen[0]) == 10 and len(chosen[1]) == 7 and len(chosen[3]) == 1
    per_class = []
    with torch.no_grad():
        for c in (0, 1, 2):
            losses = []
            for i, j in itertools.combinations(chosen[c].tolist(), 2):
                logits = model(((x[i] + x[j]) / 2)[None]).double()
                losses.append(-torch.log_softmax(logits, 1)[0, c].item())
            per_class.append(np.mean(losses))
    assert result.scores["mixup_loss"] == pytest.approx(np.mean(per_class), rel=1e-6)
    assert result.status["mixup_loss"]["warnings"] == ["class 3 has one probe sample: skipped"]


# ---- weightwatcher --------------------------------------------------------------------------------------------------------
WW = ["ww_alpha", "ww_alpha_weighted", "ww_stable_rank", "ww_log_spectral_norm"]


class WideNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 16, 128)
        self.fc2 = nn.Linear(128, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


def test_weightwatcher_metrics_equal_its_summary_and_stay_quiet(capfd) -> None:
    ww = pytest.importorskip("weightwatcher")
    torch.manual_seed(0)
    model = WideNet().eval()
    x, y = data()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = score(model, x, y, WW)
    assert [str(w.message) for w in caught] == []
    assert list(root.handlers) == handlers and root.level == level
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    import contextlib
    import io

    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        watcher = ww.WeightWatcher(model=model)
        summary = watcher.get_summary(watcher.analyze())
    for name, key in zip(WW, ["alpha", "alpha_weighted", "stable_rank", "log_spectral_norm"], strict=True):
        assert result.status[name]["status"] == "ok", result.status[name]
        assert result.scores[name] == pytest.approx(float(summary[key]), rel=1e-9), name


def test_without_weightwatcher_the_metrics_name_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "weightwatcher", None)  # import fails
    model = MLP().eval()
    x, y = data()
    result = score(model, x, y, ["margin", *WW])
    for name in WW:
        assert result.status[name]["status"] == "undefined"
        assert "gscore[weightwatcher]" in result.status[name]["reason"]


# ---- families and the default set -----------------------------------------------------------------------------------------
def test_families_expand_and_every_measure_has_one() -> None:
    assert expand_measure_names(["norm", "c1"])[-1] == "c1"
    assert set(expand_measure_names(["norm"])) == set(NORMS) | {"distance_to_init", "layer_rotation"}
    assert expand_measure_names(["all"]) == list(MEASURES)
    assert family_members("spectral") == tuple(WW)
    assert family_members("representation") == ("davies_bouldin", "mixup_loss")
    assert all(m.family for m in MEASURES.values())
    assert set(DEFAULT_MEASURES) == {"c1", "c2", "c3", "c4", *NORMS, "davies_bouldin"}


def test_families_skip_hierarchy_measures_without_a_hierarchy_but_a_named_one_is_refused() -> None:
    from gscore.errors import MeasureError

    request = ScoreRequest(checkpoint=None, arch={}, dataset="x", measures=["clustering", "margin"])  # type: ignore[arg-type]
    chosen, notes = resolve_measures(request, has_hierarchy=False)
    assert chosen == ["c3", "c4", "margin"] and len(notes) == 2
    request.measures = ["norm", "c1"]
    with pytest.raises(MeasureError, match="c1"):
        resolve_measures(request, has_hierarchy=False)


def test_default_set_runs_the_cheap_baselines_in_one_extraction_pass(monkeypatch) -> None:
    import gscore.measures.context as measure_inputs

    calls = []
    original = measure_inputs.extract_preactivations

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(measure_inputs, "extract_preactivations", counting)
    torch.manual_seed(0)
    model = trained_like(BNNet())
    x, y = data()
    result = score(model, x, y, None)
    assert set(result.scores) == {"c3", "c4", *NORMS, "davies_bouldin"}  # no hierarchy: c1/c2 skipped
    assert len(calls) == 1
    assert calls[0]["logits"] and calls[0]["last_linear"] and not calls[0]["representations"]
