"""Tests of gscore.measures.sharpness: closed forms, rescaling invariance, sharp vs flat, batched == loop,
determinism, and that the caller's model is never modified (also when cancelled)."""

from __future__ import annotations

import copy
import dataclasses
import math
from statistics import NormalDist

import pytest
import torch
from torch import Tensor, nn

from gscore.errors import JobCancelled, MeasureError
from gscore.measures import sharpness
from gscore.measures.sharpness import (
    MAGNITUDE_EPS,
    perturbed_parameter_names,
    random_sharpness,
    random_sharpness_kernels,
    worst_sharpness,
    worst_sharpness_kernels,
)
from gscore.measures.table import MEASURES

CPU = torch.device("cpu")
# the four sharpness functions by measure name: the table's perturbation entries
SHARPNESS_MEASURES = {n: getattr(sharpness, n) for n, m in MEASURES.items() if m.kind == "perturbation"}


# ----------------------------------------------------------------------------------------- fixtures


def blobs(n_per_class: int = 40, classes: int = 3, dim: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(classes, dim, generator=generator)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + 0.7 * torch.randn(len(y), dim, generator=generator)
    return x, y


def fit(model: nn.Module, x: Tensor, y: Tensor, iterations: int = 150) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(iterations):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def mlp_data() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    x, y = blobs()
    model = fit(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)), x, y)
    assert (model(x).argmax(1) == y).all()
    return model, x, y


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.head(self.drop(h.mean(dim=(2, 3))))


@pytest.fixture(scope="module")
def conv_data() -> tuple[nn.Module, Tensor, Tensor]:
    """A small conv net with batch norm, fitted on image blobs; running stats are the trained ones."""
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat_interleave(24)
    patterns = torch.randn(3, 3, 6, 6, generator=generator)
    x = patterns[y] + 0.8 * torch.randn(len(y), 3, 6, 6, generator=generator)
    model = fit(SmallConvNet(), x, y, iterations=80)
    return model, x, y


def state_snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_bit_identical(model: nn.Module, snapshot: dict[str, Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for key, value in snapshot.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def evaluator(model: nn.Module, x: Tensor, y: Tensor, kernels_only: bool = False, batch_size: int = 500):
    return sharpness._Evaluator(model, x, y, kernels_only=kernels_only, batch_size=batch_size, device=CPU)


# ------------------------------------------------------------------------------------- closed forms


def test_error_under_a_given_perturbation_matches_the_closed_form() -> None:
    """Linear classifier: error of (W + dW, b + db) is mean(argmax(x (W+dW)^T + b + db) != y), batched too."""
    x, y = blobs(n_per_class=30, classes=3, dim=2, seed=3)
    model = nn.Linear(2, 3)
    generator = torch.Generator().manual_seed(5)
    deltas = {
        "weight": 2.0 * torch.randn(4, 3, 2, generator=generator),
        "bias": 3.0 * torch.randn(4, 3, generator=generator),
    }
    expected = []
    for k in range(4):
        w = model.weight.detach() + deltas["weight"][k]
        b = model.bias.detach() + deltas["bias"][k]
        logits = x @ w.T + b
        expected.append(int((logits.argmax(1) != y).sum()))
    ev = evaluator(model, x, y, batch_size=7)
    perturbed = {n: ev.params[n] + deltas[n] for n in ("weight", "bias")}
    assert ev.wrong_counts(perturbed).tolist() == expected
    assert ev.wrong_counts_loop(perturbed).tolist() == expected
    assert 0 < sum(expected) < 4 * len(y)  # the perturbations do change predictions


def test_non_finite_logits_count_as_errors() -> None:
    x = torch.tensor([[1.0], [-1.0]])
    y = torch.tensor([1, 0])
    ev = evaluator(nn.Linear(1, 2), x, y)
    assert int(ev.wrong_count({"weight": torch.full((2, 1), float("nan"))})) == 2


def two_point_problem(a: float) -> tuple[nn.Module, Tensor, Tensor]:
    """Logits (w1 x, w2 x) with w = (-a, a) on x = +1 (class 1), -1 (class 0): both points are misclassified
    exactly when w2' - w1' < 0, so the error of a perturbation is 0 or 1."""
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-a], [a]]))
    return model, torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 0])


def test_random_bisection_finds_the_analytic_sigma() -> None:
    """w_i' = w_i + sigma (a + eps) z_i: error(sigma) = Phi(-sqrt(2) a / (sigma (a + eps))); with a = eps
    the docs/measures.md form gives sigma' = 0.552 (the form sigma |w| + eps would give 0.10)."""
    a = MAGNITUDE_EPS
    model, x, y = two_point_problem(a)
    draws = 4000
    result = random_sharpness(model, x, y, draws=draws, steps=20, seed=3)

    def sigma_at(error: float) -> float:
        return math.sqrt(2) * a / ((a + MAGNITUDE_EPS) * -NormalDist().inv_cdf(error))

    slack = 0.01 + 3 * math.sqrt(0.1 * 0.9 / draws)  # bisection tolerance + Monte-Carlo error
    assert sigma_at(0.1 - slack) <= result.scale <= sigma_at(0.1 + slack)
    assert result.value == pytest.approx(1 / result.scale)
    assert result.base_accuracy == 1.0 and result.diagnostics["converged"]
    assert abs(result.diagnostics["error"] - 0.1) <= 0.01


def test_random_bisection_widens_the_upper_bound() -> None:
    model, x, y = two_point_problem(1.0)  # sigma' = sqrt(2) / (1.001 * 1.2816) = 1.10
    result = random_sharpness(model, x, y, draws=2000, upper=0.3, seed=0)
    assert result.diagnostics["widenings"] == 2 and result.diagnostics["upper_used"] == pytest.approx(1.2)
    assert 0.95 < result.scale < 1.3


def test_worst_case_bisection_finds_the_analytic_alpha() -> None:
    """The worst box corner u = (+r, -r), r = alpha (a + eps), flips both points iff alpha > a / (a + eps):
    with a = 2 eps, alpha' = 2/3 (the form alpha |w| + eps would give 1/2)."""
    model, x, y = two_point_problem(2 * MAGNITUDE_EPS)
    result = worst_sharpness(model, x, y, steps=15)
    assert result.scale == pytest.approx(2 / 3, abs=1e-4)
    assert result.diagnostics["widenings"] == 2  # default upper 0.25 -> 0.5 -> 1.0
    assert not result.diagnostics["converged"]  # the error jumps from 0 to 1: no midpoint within tolerance
    lo, hi = result.diagnostics["bracket"]
    assert lo < 2 / 3 < hi and hi - lo == pytest.approx(0.5 / 2**15)
    assert result.steps == 15


# ------------------------------------------------------------------------------ rescaling invariance


def rescaled_mlp(model: nn.Module, c: float) -> nn.Module:
    """Layer 1 (weight, bias) times c, layer 2 weight over c: the same function (ReLU is homogeneous)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.mul_(c)
        other[0].bias.mul_(c)
        other[2].weight.div_(c)
    return other


def test_magnitude_aware_measures_are_rescaling_invariant_plain_noise_is_not(mlp_data) -> None:
    model, x, y = mlp_data
    rescaled = rescaled_mlp(model, 8.0)
    torch.testing.assert_close(rescaled(x), model(x), rtol=1e-4, atol=1e-4)
    search = sharpness.Bisection(
        steps=12, target_drop=0.1, tolerance=0.01, upper=2.0, seed=0, batch_size=500, device=CPU
    )
    options = dict(draws=20, copies_per_pass=None, batched=True)
    aware = [sharpness._random_sharpness(m, x, y, search, **options).scale for m in (model, rescaled)]
    plain_search = dataclasses.replace(search, magnitude_aware=False)
    plain = [sharpness._random_sharpness(m, x, y, plain_search, **options).scale for m in (model, rescaled)]
    assert aware[1] == pytest.approx(aware[0], rel=0.05)
    assert abs(math.log(plain[1] / plain[0])) > math.log(2.0)  # plain noise sees a different sharpness
    worst = [worst_sharpness(m, x, y, steps=12).scale for m in (model, rescaled)]
    # sign ascent: equal up to eps and to 1-sample flips of the discrete error (1/120 vs tolerance 0.01)
    assert worst[1] == pytest.approx(worst[0], rel=0.2)


def test_kernels_measures_are_invariant_to_scaling_a_conv_before_batch_norm(conv_data) -> None:
    """In batch-statistics mode, conv weight times c before BN changes nothing (BN divides it out)."""
    model, x, y = conv_data
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.conv.weight.mul_(5.0)
        scaled.bn.running_mean.mul_(5.0)  # keeps the eval-mode function too
        scaled.bn.running_var.mul_(25.0)
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-3, atol=1e-3)
    first, second = (
        random_sharpness_kernels(m, x, y, draws=10, steps=12, batch_size=24) for m in (model, scaled)
    )
    assert first.base_accuracy == second.base_accuracy
    assert second.scale == pytest.approx(first.scale, rel=0.05)


# ------------------------------------------------------------------------------------- sharp vs flat


def margin_classifier(bias_shift: float, scale: float = 10.0) -> nn.Module:
    """2 classes separated by x_0 = 0 (points at x_0 = +-1): the logit gap is 2 scale (x_0 + bias_shift),
    so bias_shift 0.9 leaves the class-0 points a margin of 0.1 (sharp), 0 a margin of 1 (flat)."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-scale, 0.0], [scale, 0.0]]))
        model.bias.copy_(torch.tensor([-scale * bias_shift, scale * bias_shift]))
    return model


def test_sharp_minimum_scores_sharper_than_flat() -> None:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat(30)
    x = torch.stack([2.0 * y - 1, torch.randn(60, generator=generator)], dim=1)
    sharp, flat = margin_classifier(0.9, scale=50.0), margin_classifier(0.0, scale=1.0)
    for model in (sharp, flat):
        assert (model(x).argmax(1) == y).all()
    for measure in SHARPNESS_MEASURES.values():
        kwargs = {"draws": 20} if "draws" in measure.__code__.co_varnames else {}
        sharp_value = measure(sharp, x, y, steps=12, **kwargs).value
        flat_value = measure(flat, x, y, steps=12, **kwargs).value
        assert sharp_value > 2 * flat_value, measure.__name__


# ------------------------------------------------------------------------------- batched == one by one


@pytest.mark.parametrize(("kernels_only", "sigma"), [(False, 0.4), (True, 1.0)])
def test_batched_errors_equal_the_one_copy_loop(conv_data, kernels_only: bool, sigma: float) -> None:
    model, x, y = conv_data
    ev = evaluator(model, x, y, kernels_only=kernels_only, batch_size=24)
    unit = sharpness._unit_scales(ev, magnitude_aware=True)
    z = sharpness._standard_normal_draws(ev, 6, torch.Generator().manual_seed(0))
    perturbed = {n: ev.params[n] + sigma * unit[n] * z[n] for n in ev.names}
    batched, looped = ev.wrong_counts(perturbed), ev.wrong_counts_loop(perturbed)
    assert batched.tolist() == looped.tolist()
    assert len(set(batched.tolist())) > 1  # the copies differ
    # the logits themselves agree to float precision
    fixed = {n: t for n, t in ev.params.items() if n not in perturbed}
    with torch.no_grad():
        stacked = torch.func.vmap(
            lambda p: torch.func.functional_call(ev.module, ({**fixed, **p}, ev.buffers), (ev.x,))
        )(perturbed)
        for k in range(6):
            one = torch.func.functional_call(
                ev.module, ({**fixed, **{n: t[k] for n, t in perturbed.items()}}, ev.buffers), (ev.x,)
            )
            torch.testing.assert_close(stacked[k], one, rtol=1e-5, atol=1e-5)


def test_batched_loop_and_chunked_runs_give_the_same_result(conv_data) -> None:
    model, x, y = conv_data
    options = dict(draws=7, steps=10, batch_size=20, seed=4)
    batched = random_sharpness(model, x, y, batched=True, **options)
    looped = random_sharpness(model, x, y, batched=False, **options)
    chunked = random_sharpness(model, x, y, batched=True, copies_per_pass=3, **options)
    automatic = random_sharpness(model, x, y, **options)  # CPU: one by one
    assert automatic.parameters["batched"] is False and batched.parameters["batched"] is True
    runs = (batched, looped, chunked, automatic)
    assert len({(r.scale, r.steps, r.diagnostics["evaluations"], r.diagnostics["error"]) for r in runs}) == 1


# -------------------------------------------------------------------------------------- determinism


def test_fixed_seed_is_deterministic_and_seeds_differ(conv_data) -> None:
    model, x, y = conv_data
    for measure in (random_sharpness, random_sharpness_kernels):
        first, second = (measure(model, x, y, draws=5, steps=8, batch_size=24, seed=11) for _ in range(2))
        assert first == second
    first, second = (worst_sharpness_kernels(model, x, y, steps=6, batch_size=24) for _ in range(2))
    assert first == second
    ev = evaluator(model, x, y)
    draws = [sharpness._standard_normal_draws(ev, 2, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert all(torch.equal(draws[0][n], draws[1][n]) for n in ev.names)
    assert not any(torch.equal(draws[0][n], draws[2][n]) for n in ev.names)
    unit = sharpness._unit_scales(ev, magnitude_aware=True)
    errors = [
        sharpness._random_error(ev, 0.5, unit=unit, draws=8, copies_per_pass=8, seed=s, batched=True)
        for s in (0, 1)
    ]
    assert errors[0] != errors[1]


# ------------------------------------------------------------------------ the model is never modified


def test_model_is_bit_identical_after_every_measure(conv_data) -> None:
    model, x, y = conv_data
    model = copy.deepcopy(model).train()  # train mode: BN would update its running stats if used as is
    snapshot = state_snapshot(model)
    flags = [m.training for m in model.modules()]
    calls: list[tuple[int, int]] = []
    for name, measure in SHARPNESS_MEASURES.items():
        calls.clear()
        result = measure(model, x, y, steps=5, batch_size=24, progress=lambda d, t: calls.append((d, t)))
        assert result.parameters["measure"] == name
        assert calls and calls[-1] == (5, 5) and all(total == 5 for _, total in calls)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert_bit_identical(model, snapshot)
    assert [m.training for m in model.modules()] == flags


@pytest.mark.parametrize("name", sorted(SHARPNESS_MEASURES))
def test_cancellation_mid_way_raises_and_leaves_the_model_untouched(conv_data, name: str) -> None:
    model, x, y = conv_data
    snapshot = state_snapshot(model)
    asked = []

    def should_cancel() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(JobCancelled):
        SHARPNESS_MEASURES[name](model, x, y, steps=10, batch_size=24, should_cancel=should_cancel)
    assert len(asked) == 4
    assert_bit_identical(model, snapshot)
    assert not model.training


# --------------------------------------------------------------------------------------- kernels only


def test_kernels_only_perturbs_only_conv_and_linear_weights(conv_data) -> None:
    model, _, _ = conv_data
    kernels = perturbed_parameter_names(model, kernels_only=True)
    assert kernels == ["conv.weight", "conv2.weight", "head.weight"]
    everything = perturbed_parameter_names(model, kernels_only=False)
    assert set(everything) == {n for n, _ in model.named_parameters()}
    assert {"bn.weight", "bn.bias", "conv2.bias", "head.bias"} <= set(everything)


def test_kernels_only_uses_batch_statistics_without_touching_running_stats(conv_data) -> None:
    """Corrupted running stats ruin eval mode; batch-statistics mode ignores them and leaves them alone."""
    model, x, y = conv_data
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.bn.running_mean.fill_(40.0)
    snapshot = state_snapshot(broken)
    kernels = evaluator(broken, x, y, kernels_only=True, batch_size=len(y))
    eval_mode = evaluator(broken, x, y, kernels_only=False, batch_size=len(y))
    kernels_buffers = {n: b.clone() for n, b in kernels.buffers.items()}
    assert int(kernels.wrong_count({})) < int(eval_mode.wrong_count({}))
    # batch-statistics mode equals a train-mode forward (dropout aside) on the same batch
    reference = copy.deepcopy(model).train()
    reference.drop.eval()
    with torch.no_grad():
        expected = int((reference(x).argmax(1) != y).sum())
    assert int(kernels.wrong_count({})) == expected
    assert all(torch.equal(kernels.buffers[n], b) for n, b in kernels_buffers.items())
    result = random_sharpness_kernels(broken, x, y, draws=4, steps=4, batch_size=len(y))
    assert result.base_accuracy == 1 - expected / len(y)
    assert_bit_identical(broken, snapshot)


# ------------------------------------------------------------------------------------ API and inputs


def test_measure_names_match_the_registry() -> None:
    """Each perturbation entry of the table computes with the function of its own name (no second table)."""
    assert set(SHARPNESS_MEASURES) == {
        "random_sharpness",
        "worst_sharpness",
        "random_sharpness_kernels",
        "worst_sharpness_kernels",
    }
    assert all(MEASURES[n].orientation == -1 for n in SHARPNESS_MEASURES)
    assert all(MEASURES[n].compute.keywords["measure"] is f for n, f in SHARPNESS_MEASURES.items())
    assert SHARPNESS_MEASURES["worst_sharpness_kernels"] is worst_sharpness_kernels


def test_result_records_its_parameters(mlp_data) -> None:
    model, x, y = mlp_data
    result = worst_sharpness(model, x, y, steps=4, ascent_steps=3, ascent_lr=0.5, seed=2)
    assert {
        "steps": 4,
        "ascent_steps": 3,
        "ascent_lr": 0.5,
        "seed": 2,
        "samples": len(y),
        "kernels_only": False,
        "target_drop": 0.1,
        "tolerance": 0.01,
        "upper": 0.25,
    }.items() <= result.parameters.items()
    assert math.isfinite(result.value) and result.value > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"draws": 0},
        {"steps": -1},
        {"upper": 0.0},
        {"target_drop": 1.0},
        {"tolerance": float("nan")},
        {"steps": 2.5},
        {"batch_size": 0},
    ],
)
def test_bad_parameters_are_measure_errors(mlp_data, kwargs) -> None:
    model, x, y = mlp_data
    with pytest.raises(MeasureError):
        random_sharpness(model, x, y, **kwargs)


def test_bad_inputs_and_untrained_models_are_measure_errors(mlp_data) -> None:
    model, x, y = mlp_data
    with pytest.raises(MeasureError):
        random_sharpness(model, x, y.float())
    with pytest.raises(MeasureError):
        worst_sharpness(model, x[:5], y)
    wrong_labels = (y + 1) % 3  # accuracy 0: cannot drop by 0.1
    with pytest.raises(MeasureError, match="below the target drop"):
        random_sharpness(model, x, wrong_labels)


# ------------------------------------------------------------------------- review: early stopping


def full_ascent_error(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    alpha: float,
    kernels_only: bool,
    ascent_steps: int = sharpness.DEFAULT_ASCENT_STEPS,
    ascent_lr: float = sharpness.DEFAULT_ASCENT_LR,
) -> float:
    """Reference: the largest error over every step of the sign ascent, never stopping early."""
    ev = evaluator(model, x, y, kernels_only=kernels_only)
    radius = {n: alpha * (ev.params[n].abs() + MAGNITUDE_EPS) for n in ev.names}
    delta = {n: torch.zeros_like(ev.params[n]) for n in ev.names}
    worst = 0
    for _ in range(ascent_steps):
        wrong, grads = ev.wrong_count_and_gradient(delta)
        worst = max(worst, wrong)
        for n in ev.names:
            delta[n] = torch.clamp(delta[n] + ascent_lr * radius[n] * grads[n].sign(), -radius[n], radius[n])
    worst = max(worst, int(ev.wrong_count({n: ev.params[n] + delta[n] for n in ev.names})))
    return worst / ev.samples


def test_worst_case_error_at_the_returned_alpha_is_that_of_the_full_ascent(mlp_data) -> None:
    """The ascent may stop early only once the error is above the tolerance band: stopping as soon as it
    reached the threshold accepted alpha = 0.219 here, where the full ascent costs 0.15 (target 0.1)."""
    model, x, y = mlp_data
    result = worst_sharpness_kernels(model, x, y, steps=10)
    threshold = 1 - result.base_accuracy + 0.1
    full = full_ascent_error(model, x, y, result.scale, kernels_only=True)
    assert result.diagnostics["converged"]
    assert full == pytest.approx(result.diagnostics["error"])
    assert abs(full - threshold) <= 0.01


def test_random_draws_stop_early_once_the_error_is_certainly_too_high(conv_data, monkeypatch) -> None:
    """Same scale and steps as evaluating every draw at every step, with fewer forward passes."""
    model, x, y = conv_data
    options = dict(draws=10, steps=8, batch_size=24, seed=3)
    ev = evaluator(model, x, y, batch_size=24)
    base_error, threshold = sharpness._base(ev, 0.1)
    unit = sharpness._unit_scales(ev, magnitude_aware=True)
    reference = sharpness._bisect(
        lambda s: sharpness._random_error(
            ev, s, unit=unit, draws=10, copies_per_pass=10, seed=3, batched=False
        ),
        threshold=threshold,
        steps=8,
        tolerance=0.01,
        upper=2.0,
        check_cancel=lambda: None,
        progress=None,
    )
    calls = []
    original = sharpness._Evaluator.wrong_count
    monkeypatch.setattr(
        sharpness._Evaluator, "wrong_count", lambda self, p: calls.append(1) or original(self, p)
    )
    result = random_sharpness(model, x, y, **options)
    assert (result.scale, result.steps) == reference[:2]
    assert result.diagnostics == reference[2]
    evaluations = result.diagnostics["evaluations"]
    assert len(calls) < 1 + 10 * evaluations  # base + every draw of every evaluation, without early stops
    batched = random_sharpness(model, x, y, batched=True, copies_per_pass=2, **options)
    assert (batched.scale, batched.steps, batched.diagnostics) == (
        result.scale,
        result.steps,
        result.diagnostics,
    )


def test_batch_statistics_mode_with_a_one_sample_batch_is_a_measure_error() -> None:
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    for measure in (random_sharpness_kernels, worst_sharpness_kernels):
        with pytest.raises(MeasureError, match="at least 2 samples per evaluated batch"):
            measure(model, x, y, batch_size=1, steps=2)
        with pytest.raises(MeasureError, match="at least 2 samples per evaluated batch"):
            measure(model, x[:1], y[:1], steps=2)
    assert random_sharpness_kernels(model, x, y, batch_size=4, steps=2, draws=2).value > 0  # batches 3 + 2
    assert random_sharpness(model, x, y, batch_size=1, steps=2, draws=2).value > 0  # eval mode: fine
