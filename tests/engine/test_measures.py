"""c1-c4 (gscore.measures.clustering): against the brute-force references (tests/reference.py) on awkward random
data, on tiny hand-computed cases, and on the inputs that must raise MeasureError."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from reference import reference_c1, reference_c2, reference_c3, reference_c4
from threadpoolctl import threadpool_limits
from torch import Tensor

from gscore.errors import MeasureError
from gscore.measures import clustering as measures

TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """The inputs here are tiny: extra threads only spin, badly so on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------
# Random data with every awkward case the conventions talk about
# ----------------------------------------------------------------------------------------------------

# label values, not 0..K-1
SUPERCLASS_OF = {10: 7, 11: 7, 12: 7, 20: 3, 21: 3, 30: 11, 31: 11, 32: 11, 33: 11}
WIDTHS = [3, 12, 45, 7, 60, 20, 5]  # c4 p: 0, 17, 71 (34 live), dropped (all dead), 75, 50, 0


def random_case(seed: int, n: int = 160) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(pre [n, 152] float32, layer_of [152] with interleaved layers, y [n], sub [n]).

    Uneven subclass sizes including a single-sample subclass (12); a fully dead layer (3); dead neurons,
    a constant live neuron, a constant-0 neuron (max 0: live), a varying neuron with max 0 (live) and
    a constant negative one (dead) in layer 2; neurons constant on a superclass, on a subclass, and on each of two parts of a superclass;
    samples whose relu(pre) row is all zero in layers 1 and 5 (c2) and whose c4 row is zero in layer 6;
    shuffled samples and columns.
    """
    rng = np.random.default_rng(seed)
    subclasses = np.array(list(SUPERCLASS_OF))
    sub = rng.choice(subclasses, size=n, p=rng.dirichlet(np.full(subclasses.shape[0], 2.0)))
    sub[sub == 12] = 10
    for index, label in enumerate(subclasses):  # 12 exactly once, every other subclass at least twice
        sub[index * 7] = label
        if label != 12:
            sub[index * 7 + 1] = label
    y = np.array([SUPERCLASS_OF[s] for s in sub])
    layer_of = np.repeat(np.arange(len(WIDTHS)), WIDTHS)
    m = layer_of.shape[0]
    pre = rng.normal(size=(n, m)) * rng.uniform(0.5, 3.0, size=m) + rng.normal(size=m)
    cols = [np.nonzero(layer_of == layer)[0] for layer in range(len(WIDTHS))]
    pre[:, cols[3]] = -np.abs(pre[:, cols[3]]) - 0.01  # dead layer
    pre[:, cols[2][:10]] = -np.abs(pre[:, cols[2][:10]]) - 0.1  # dead neurons
    pre[:, cols[2][10]] = 0.7  # constant, live
    pre[:, cols[2][11]] = 0.0  # constant 0: max is 0, so live
    pre[:, cols[2][12]] = -0.3  # constant negative: dead
    pre[:, cols[2][13]] = np.minimum(pre[:, cols[2][13]], 0.0)  # varies, max exactly 0: live
    pre[y == 3, cols[4][0]] = 1.25  # constant on a superclass
    pre[sub == 10, cols[4][1]] = -2.1  # constant on a subclass
    pre[y == 11, cols[4][2]] = 0.1  # constant on each of two parts of a superclass
    pre[sub == 30, cols[4][2]] = 1 / 3
    zero_rows = rng.choice(n, 15, replace=False)
    pre[np.ix_(zero_rows, cols[1])] = -1.0
    pre[np.ix_(zero_rows[:5], cols[5])] = -0.5
    # c4, layer 6 (p = 0): samples at every neuron's minimum are all-zero rows after the threshold.
    pre[np.ix_(zero_rows[5:8], cols[6])] = pre[:, cols[6]].min(axis=0) - 1.0
    samples, columns = rng.permutation(n), rng.permutation(m)
    return (
        torch.tensor(pre[samples][:, columns], dtype=torch.float32),
        torch.tensor(layer_of[columns]),
        torch.tensor(y[samples]),
        torch.tensor(sub[samples]),
    )


def fine_labels(sub: Tensor) -> Tensor:
    """Subclass labels with the single-sample subclass merged (c4 needs >= 2 samples per class)."""
    return torch.where(sub == 12, 10, sub)


@pytest.fixture(scope="module", params=[0, 1, 2])
def case(request: pytest.FixtureRequest) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return random_case(request.param)


@pytest.mark.parametrize("k", [1, 3, 30])
def test_c1_matches_reference(case: tuple[Tensor, ...], k: int) -> None:
    pre, _, y, sub = case
    assert measures.subclass_selectivity(pre, y, sub, k=k) == pytest.approx(
        reference_c1(pre, y, sub, k), abs=TOL
    )


@pytest.mark.parametrize("k", [1, 3, 10])  # 10 > 7 layers: all
def test_c2_matches_reference(case: tuple[Tensor, ...], k: int) -> None:
    pre, layer_of, y, sub = case
    assert measures.layer_silhouette(pre, layer_of, y, sub, k=k) == pytest.approx(
        reference_c2(pre, layer_of, y, sub, k), abs=TOL
    )


@pytest.mark.parametrize("k", [1, 3, 30])
@pytest.mark.parametrize("fine", [False, True])
def test_c3_matches_reference(case: tuple[Tensor, ...], k: int, fine: bool) -> None:
    pre, _, y, sub = case
    labels = sub if fine else y  # sub keeps its single-sample class (std 0)
    assert measures.neuron_variance(pre, labels, k=k) == pytest.approx(reference_c3(pre, labels, k), abs=TOL)


@pytest.mark.parametrize("k", [1, 3, 10])  # 10 > 7 layers: all
@pytest.mark.parametrize("fine", [False, True])
def test_c4_matches_reference(case: tuple[Tensor, ...], k: int, fine: bool) -> None:
    pre, layer_of, y, sub = case
    labels = fine_labels(sub) if fine else y
    assert measures.layer_variance(pre, layer_of, labels, k=k) == pytest.approx(
        reference_c4(pre, layer_of, labels, k), abs=TOL
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_case_has_what_it_claims(seed: int) -> None:
    pre, layer_of, y, sub = random_case(seed)
    counts = torch.unique(sub, return_counts=True)[1].tolist()
    assert sorted(counts)[:2] == [1, sorted(counts)[1]] and sorted(counts)[1] >= 2
    assert len(set(counts)) > 3  # uneven
    assert bool((pre[:, layer_of == 3] < 0).all())  # dead layer
    assert int(((pre < 0).all(0)).sum()) >= 7 + 10 + 1
    live = [int((pre[:, layer_of == layer] >= 0).any(0).sum()) for layer in range(len(WIDTHS))]
    levels = {measures._percentile_level(c) for c in live if c}
    assert live[3] == 0 and {0, 75} <= levels and len(levels) >= 4
    assert bool((torch.relu(pre[:, layer_of == 1]).sum(1) == 0).any())  # all-zero activation rows


def test_invariant_to_sample_order_and_label_values() -> None:
    pre, layer_of, y, sub = random_case(3)
    perm = torch.randperm(pre.shape[0], generator=torch.Generator().manual_seed(0))
    pre2, y2, sub2 = pre[perm].double(), (100 - y[perm]), (sub[perm] * 3 + 1)
    assert measures.subclass_selectivity(pre2, y2, sub2) == pytest.approx(
        measures.subclass_selectivity(pre, y, sub), abs=1e-12
    )
    assert measures.layer_silhouette(pre2, layer_of, y2, sub2) == pytest.approx(
        measures.layer_silhouette(pre, layer_of, y, sub), abs=1e-12
    )
    assert measures.neuron_variance(pre2, y2) == pytest.approx(measures.neuron_variance(pre, y), abs=1e-12)
    assert measures.layer_variance(pre2, layer_of, y2) == pytest.approx(
        measures.layer_variance(pre, layer_of, y), abs=1e-12
    )


@pytest.mark.parametrize("k", [1, 10])
def test_c4_device_generic_route_matches_reference(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """The route CUDA takes (torch.kthvalue percentile, unblocked transpose), run on CPU."""
    monkeypatch.setattr(measures, "_cpu_fast_path", lambda x: False)
    pre, layer_of, y, sub = random_case(6)
    for labels in (y, fine_labels(sub)):
        assert measures.layer_variance(pre, layer_of, labels, k=k) == pytest.approx(
            reference_c4(pre, layer_of, labels, k), abs=TOL
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inputs_are_not_modified(dtype: torch.dtype) -> None:
    pre, layer_of, y, sub = random_case(5)
    pre = pre.to(dtype)
    originals = [t.clone() for t in (pre, layer_of, y, sub)]
    measures.subclass_selectivity(pre, y, sub)
    measures.layer_silhouette(pre, layer_of, y, sub)
    measures.neuron_variance(pre, y)
    measures.layer_variance(pre, layer_of, y)
    assert all(torch.equal(a, b) for a, b in zip(originals, (pre, layer_of, y, sub), strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    pre, layer_of, y, sub = random_case(4)
    fine = fine_labels(sub)
    gpu = [t.cuda() for t in (pre, layer_of, y, sub, fine)]
    for cpu_args, gpu_args, fn in [
        ((pre, y, sub), (gpu[0], gpu[2], gpu[3]), measures.subclass_selectivity),
        ((pre, layer_of, y, sub), tuple(gpu[:4]), measures.layer_silhouette),
        ((pre, fine), (gpu[0], gpu[4]), measures.neuron_variance),
        ((pre, layer_of, fine), (gpu[0], gpu[1], gpu[4]), measures.layer_variance),
    ]:
        assert fn(*gpu_args) == pytest.approx(fn(*cpu_args), abs=1e-9)


# ----------------------------------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------------------------------


def test_topk_mean_by_hand() -> None:
    values = torch.tensor([3.0, -1.0, 2.0])
    assert measures.topk_mean(values, 1).item() == 3.0
    assert measures.topk_mean(values, 2).item() == 2.5  # (3 + 2) / 2
    assert measures.topk_mean(values, 5).item() == pytest.approx(4 / 3)  # fewer than k: all, signed
    table = torch.tensor([[1.0, 5.0, 3.0], [-2.0, -1.0, -3.0]])
    assert measures.topk_mean(table, 2, dim=1).tolist() == [4.0, -1.5]  # (5 + 3) / 2, (-1 - 2) / 2
    assert measures.topk_mean(table, 1, dim=0).tolist() == [1.0, 5.0, 3.0]


def test_c1_by_hand() -> None:
    # One superclass, subclasses 0 = samples {0, 1}, 1 = samples {2, 3}.
    # Neuron A = [1, 3, 4, 4]: sub 0: mean 2, std 1; sub 1: mean 4, std 0 (constant).
    #   sel(0) = (2 - 4) / (1 + 0) = -2, sel(1) = (4 - 2) / (0 + 1) = 2.
    # Neuron B = [-1, -1, -2, -5] is dead: 0. Neuron C = 5 everywhere: 0 / 0 -> 0.
    # Neuron D = [-2, -2, 0, -1]: max is 0, so live. sub 0: mean -2, std 0; sub 1: mean -0.5, std 0.5;
    #   sel(0) = -1.5 / 0.5 = -3, sel(1) = 3.
    # k = 1: sub 0 -> max(-2, 0, 0, -3) = 0, sub 1 -> 3; median (even count: mean of the two) = 1.5.
    # k = 2: sub 0 -> (0 + 0) / 2 = 0, sub 1 -> (3 + 2) / 2 = 2.5; median = 1.25.
    pre = torch.tensor(
        [[1.0, -1.0, 5.0, -2.0], [3.0, -1.0, 5.0, -2.0], [4.0, -2.0, 5.0, 0.0], [4.0, -5.0, 5.0, -1.0]]
    )
    y, sub = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1])
    assert measures.subclass_selectivity(pre, y, sub, k=1) == pytest.approx(1.5, abs=1e-12)
    assert measures.subclass_selectivity(pre, y, sub, k=2) == pytest.approx(1.25, abs=1e-12)


def test_c1_constant_sets_have_exactly_zero_std() -> None:
    # One superclass; one neuron constant on each subclass: 0.1 (37 samples), 0.7 (51), 1.3 (23).
    # sub 1: C = {0.7}, std 0; R = 37 x 0.1 + 23 x 1.3: mean 33.6 / 60 = 0.56,
    #   std = 1.2 sqrt(37 * 23) / 60; sel = 0.14 / (1.2 sqrt(851) / 60) = 7 / sqrt(851).
    # sub 0: (0.1 - 65.6 / 74) / (0.6 sqrt(51 * 23) / 74) = -58.2 / (0.6 sqrt(1173)) < 0,
    # sub 2: (1.3 - 39.4 / 88) / (0.6 sqrt(37 * 51) / 88) = 75 / (0.6 sqrt(1887)) > 7 / sqrt(851).
    # median = sel(sub 1). Rounding noise in a "constant" std would give garbage here.
    sub = torch.tensor([0] * 37 + [1] * 51 + [2] * 23)
    pre = torch.tensor([0.1] * 37 + [0.7] * 51 + [1.3] * 23, dtype=torch.float64)[:, None]
    y = torch.zeros_like(sub)
    assert measures.subclass_selectivity(pre, y, sub, k=1) == pytest.approx(7 / math.sqrt(851), abs=1e-12)
    assert measures.neuron_variance(pre, sub, k=1) == 0.0  # every class constant: std_C = 0 exactly
    # Two subclasses constant at 0.2 (5 samples) and 0.1 (7): std_C + std_R = 0, so sel = 0 exactly,
    # where std from sums of squares alone leaves ~1e-9 of rounding and sel = -+4e7. With a second,
    # constant-0 neuron and k = 1: sub 0 -> max(sel, 0), sub 1 -> max(-sel, 0); median 0 only if sel = 0.
    pre = torch.tensor([[0.2, 0.0]] * 5 + [[0.1, 0.0]] * 7, dtype=torch.float64)
    sub = torch.tensor([0] * 5 + [1] * 7)
    assert measures.subclass_selectivity(pre, torch.zeros_like(sub), sub, k=1) == 0.0


def test_c2_by_hand() -> None:
    # One superclass, subclasses 0 = {x1, x2}, 1 = {x3, x4}; d = 1 - 1/sqrt(2).
    # Layer 0 (columns 0 and 2): x1 = (1, 0), x2 = (2, 0), x3 = (0, 1), x4 = (1, 1).
    #   x1: a = d(x1, x2) = 0, b = mean(1, d) -> s = 1; x2 likewise s = 1;
    #   x3: a = d, b = mean(1, 1) = 1 -> s = 1 - d = 1/sqrt(2); x4: a = d, b = mean(d, d) = d -> s = 0.
    #   sil(0) = 1, sil(1) = 1 / (2 sqrt(2)).
    # Layer 1 (column 1): pre [-1, 2, 3, -1] -> relu [0, 2, 3, 0]: x1, x4 zero rows (distance 1 to all).
    #   x1: a = 1, b = 1 -> 0; x2: a = 1, b = mean(d(x2, x3) = 0, 1) = 0.5 -> -0.5;
    #   x3: a = 1, b = mean(1, 0) = 0.5 -> -0.5; x4: a = 1, b = 1 -> 0. sil(0) = sil(1) = -0.25.
    # k = 1: sub 0 -> 1, sub 1 -> 1/(2 sqrt 2); median = 1/2 + 1/(4 sqrt 2).
    # k = 2: sub 0 -> 0.375, sub 1 -> (1/(2 sqrt 2) - 0.25) / 2; median = 1/8 + 1/(8 sqrt 2).
    pre = torch.tensor([[1.0, -1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 3.0, 1.0], [1.0, -1.0, 1.0]])
    layer_of = torch.tensor([0, 1, 0])
    y, sub = torch.tensor([5, 5, 5, 5]), torch.tensor([0, 0, 1, 1])
    assert measures.layer_silhouette(pre, layer_of, y, sub, k=1) == pytest.approx(
        0.5 + 1 / (4 * math.sqrt(2)), abs=1e-12
    )
    assert measures.layer_silhouette(pre, layer_of, y, sub, k=2) == pytest.approx(
        0.125 + 1 / (8 * math.sqrt(2)), abs=1e-12
    )


def test_c3_by_hand() -> None:
    # Classes 0 = samples {0, 1}, 1 = {2, 3}.
    # Neuron A = [1, 3, 2, 6]: std_D = sqrt((4 + 0 + 1 + 9) / 4) = sqrt(3.5); std_0 = 1, std_1 = 2.
    # Neuron B = [-1, -2, -3, -4] is dead: 0.
    # Neuron C = [0, -1, 0, -1]: max is 0, so live (dead means < 0 on every sample); all stds 0.5: ratio 1.
    # k = 1: class 0 -> max(1/sqrt(3.5), 0, 1) = 1, class 1 -> 2/sqrt(3.5); c3 = (1 + 2/sqrt(3.5)) / 2.
    # k = 2: class 0 -> (1 + 1/sqrt(3.5)) / 2, class 1 -> (2/sqrt(3.5) + 1) / 2; c3 = (2 + 3/sqrt(3.5)) / 4.
    pre = torch.tensor([[1.0, -1.0, 0.0], [3.0, -2.0, -1.0], [2.0, -3.0, 0.0], [6.0, -4.0, -1.0]])
    y = torch.tensor([0, 0, 1, 1])
    root = math.sqrt(3.5)
    assert measures.neuron_variance(pre, y, k=1) == pytest.approx((1 + 2 / root) / 2, abs=1e-12)
    assert measures.neuron_variance(pre, y, k=2) == pytest.approx((2 + 3 / root) / 4, abs=1e-12)


def test_c4_by_hand() -> None:
    # Classes 0 = samples 1-3, 1 = samples 4-6. Layer 0: neurons u = [0,1,1,0,1,0], v = [0,0,1,1,0,1]
    # and a dead neuron (dropped before anything else); layer 1 is all dead (dropped).
    # 2 live neurons -> p = max(0, round(100 - 500)) = 0. u, v: mean 0.5, std 0.5 -> z = +-1, minus the
    # 0th percentile (-1), relu -> {0, 2}. Rows (/2): s1 = 0, s2 = e1, s3 = (1, 1), s4 = e2, s5 = e1, s6 = e2.
    # Cosine distances: zero row to any: 1; e1-e2: 1; equal: 0; e_i-(1,1): d = 1 - 1/sqrt(2).
    # Class 0 pairs: 1, 1, d -> std = (1 - d) sqrt(2/3 * 1/3) = 1/3.
    # Class 1 pairs: d(s4,s5) = 1, d(s4,s6) = 0, d(s5,s6) = 1 -> std = sqrt(2)/3.
    # All 15 pairs: nine 1s, four d, two 0s -> var = (9 + 4 d^2)/15 - ((9 + 4 d)/15)^2.
    # One kept layer: c4 = mean(1/3, sqrt(2)/3) / Sigma_D = (1 + sqrt(2)) / (6 Sigma_D).
    pre = torch.tensor(
        [
            [0.0, 0.0, -1.0, -1.0, -2.0],
            [1.0, 0.0, -2.0, -1.0, -2.0],
            [1.0, 1.0, -3.0, -1.0, -2.0],
            [0.0, 1.0, -1.0, -1.0, -2.0],
            [1.0, 0.0, -2.0, -1.0, -2.0],
            [0.0, 1.0, -3.0, -1.0, -2.0],
        ]
    )
    layer_of, y = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1])
    d = 1 - 1 / math.sqrt(2)
    sigma_all = math.sqrt((9 + 4 * d * d) / 15 - ((9 + 4 * d) / 15) ** 2)
    expected = (1 + math.sqrt(2)) / (6 * sigma_all)
    for k in (1, 5):
        assert measures.layer_variance(pre, layer_of, y, k=k) == pytest.approx(expected, abs=1e-12)


def test_c4_percentile_level() -> None:
    # max(0, min(75, round(100 - 1000 / C))): 100 - 1000/12 = 16.67 -> 17; 100 - 1000/16 = 37.5 -> 38;
    # 100 - 1000/34 = 70.59 -> 71; 100 - 1000/39 = 74.36 -> 74; C >= 40 -> 75; C <= 10 -> 0.
    assert [measures._percentile_level(c) for c in (1, 10, 12, 16, 34, 39, 40, 500)] == [
        0,
        0,
        17,
        38,
        71,
        74,
        75,
        75,
    ]


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------

PRE = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [-1.0, 3.0], [0.0, 1.0], [3.0, -2.0]])
LAYER_OF = torch.tensor([0, 1])
Y = torch.tensor([0, 0, 0, 1, 1, 1])
SUB = torch.tensor([0, 0, 1, 2, 3, 3])

ALL: dict[str, Callable[..., float]] = {
    "c1": lambda pre=PRE, layer_of=LAYER_OF, y=Y, sub=SUB, k=1: measures.subclass_selectivity(pre, y, sub, k),
    "c2": lambda pre=PRE, layer_of=LAYER_OF, y=Y, sub=SUB, k=1: measures.layer_silhouette(
        pre, layer_of, y, sub, k
    ),
    "c3": lambda pre=PRE, layer_of=LAYER_OF, y=Y, sub=SUB, k=1: measures.neuron_variance(pre, y, k),
    "c4": lambda pre=PRE, layer_of=LAYER_OF, y=Y, sub=SUB, k=1: measures.layer_variance(pre, layer_of, y, k),
}


@pytest.mark.parametrize("name", list(ALL))
def test_valid_small_input_runs(name: str) -> None:
    assert math.isfinite(ALL[name]())


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"k": -3},
        {"k": 1.5},
        {"k": True},
        {"pre": PRE[:, 0]},
        {"pre": PRE.long()},
        {"pre": PRE[:1]},
        {"pre": torch.where(PRE == 3.0, float("nan"), PRE)},
        {"pre": torch.where(PRE == 3.0, float("inf"), PRE)},
        {"y": Y[:5]},
        {"y": Y.double()},
        {"sub": SUB[:5]},
        {"layer_of": LAYER_OF[:1]},
        {"layer_of": torch.tensor([0, -1])},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_bad_input_raises(name: str, bad: dict[str, object]) -> None:
    if name in ("c3", "c4") and "sub" in bad or name in ("c1", "c3") and "layer_of" in bad:
        pytest.skip("argument not used by this measure")
    with pytest.raises(MeasureError):
        ALL[name](**bad)


def test_topk_mean_rejects_bad_k_and_empty_input() -> None:
    with pytest.raises(MeasureError):
        measures.topk_mean(torch.tensor([1.0]), 0)
    with pytest.raises(MeasureError):
        measures.topk_mean(torch.empty(0), 1)


@pytest.mark.parametrize("name", ["c3", "c4"])
def test_single_class_raises(name: str) -> None:
    with pytest.raises(MeasureError, match="at least 2"):
        ALL[name](y=torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize("name", ["c1", "c2"])
def test_superclass_with_single_subclass_raises(name: str) -> None:
    with pytest.raises(MeasureError, match="single subclass"):
        ALL[name](sub=torch.tensor([0, 0, 1, 2, 2, 2]))


@pytest.mark.parametrize("name", ["c1", "c2"])
def test_sub_not_nested_raises(name: str) -> None:
    with pytest.raises(MeasureError, match="not nested"):
        ALL[name](sub=torch.tensor([0, 0, 1, 1, 3, 3]))


def test_c1_allows_singleton_subclasses_c2_needs_one_shared() -> None:
    every_own = torch.tensor([0, 1, 2, 3, 4, 5])  # each superclass: 3 subclasses of 1 sample
    assert math.isfinite(ALL["c1"](sub=every_own))
    with pytest.raises(MeasureError, match="as many subclasses as samples"):  # sklearn: n_labels < n
        ALL["c2"](sub=every_own)


def test_c4_class_with_one_sample_raises() -> None:
    with pytest.raises(MeasureError, match="single sample"):
        ALL["c4"](y=torch.tensor([0, 0, 0, 0, 0, 1]))


def test_c4_all_dead_raises() -> None:
    with pytest.raises(MeasureError, match="dead"):
        ALL["c4"](pre=-PRE.abs() - 1)


def test_c4_two_sample_classes_give_exactly_zero() -> None:
    # Each class has one pair, so Sigma(C_i) = 0 exactly and c4 = 0 (the reference says so too). The
    # moment formula cancels the self-pair terms (about 1 per sample) against similarities that are
    # much smaller here, so its rounding must be judged against the former, not the latter.
    rng = np.random.default_rng(3)
    pre = rng.standard_normal((20, 64))
    layer_of, y = np.zeros(64, dtype=np.int64), np.repeat(np.arange(10), 2)
    assert reference_c4(pre, layer_of, y, 5) == 0.0
    as_tensors = (torch.from_numpy(pre), torch.from_numpy(layer_of), torch.from_numpy(y))
    assert measures.layer_variance(*as_tensors, k=5) == 0.0
