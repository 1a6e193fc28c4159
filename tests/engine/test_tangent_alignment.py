"""Tangent-feature alignment (gscore/tangent_alignment.py) against independent references: the closed form
of a linear model, an explicit ``torch.func.jacrev`` Jacobian, explicit centring matrices, a hand-built
spectrum and (when installed) nngeometry's ``GramMatrix``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from gscore.errors import JobCancelled, MeasureError
from gscore.inputs.datasets import ProbeSet
from gscore.measures.tangent_alignment import (
    centre_kernel,
    centred_targets,
    choose_outputs,
    kernel_target_alignment,
    module_tangent_kernels,
    modules_in_call_order,
    ntk_alignment_measure,
    ntk_effective_rank_measure,
    ntk_layer_alignment_measure,
    spectrum_summary,
    tangent_alignment,
    tangent_kernel,
)
from gscore.measures.types import MeasureOutcome, MeasureUndefined


@pytest.fixture(autouse=True)
def float64_single_thread():
    """The references are exact in float64; one thread (tiny ops stall on a busy shared CPU otherwise).
    Both settings are restored for the other test modules."""
    previous_dtype, previous_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(previous_dtype)
    torch.set_num_threads(previous_threads)


# ----------------------------------------------------------------------------------------------------
# Test models and references
# ----------------------------------------------------------------------------------------------------
class SharedCNN(nn.Module):
    """conv-BN-ReLU, then one conv applied twice (parameter sharing), global mean, linear head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.shared = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, classes)
        with torch.no_grad():  # running statistics far from the identity, so eval mode matters
            self.bn.running_mean.uniform_(-1.0, 1.0)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv1(x)))
        h = torch.tanh(self.shared(h))
        h = torch.tanh(self.shared(h))
        return self.head(h.mean(dim=(2, 3)))


class Scaled(nn.Module):
    """``scale * inner(x)``: the tangent kernel scales by scale**2."""

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.inner(x)


def reference_kernel(model: nn.Module, x: torch.Tensor, names: list[str] | None = None) -> torch.Tensor:
    """J J^T from the explicit Jacobian of the batched logits (jacrev), index c * N + i."""
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    chosen = names if names is not None else list(params)
    rest = {n: p for n, p in params.items() if n not in chosen}

    def logits(selected: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, {**rest, **selected}, (x,))

    jac = jacrev(logits)({n: params[n] for n in chosen})  # {name: [N, C, *shape]}
    n, c = x.shape[0], next(iter(jac.values())).shape[1]
    flat = torch.cat([j.reshape(n, c, -1) for j in jac.values()], dim=2)  # [N, C, P]
    rows = flat.transpose(0, 1).reshape(c * n, -1)
    return rows @ rows.T


def reference_alignment(kernel: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> float:
    """MEASURES.md literally: explicit (I (x) H) K (I (x) H), one-hot minus mean, vec in (c, i) order."""
    k = kernel.numpy()
    n = labels.numel()
    h = np.eye(n) - np.ones((n, n)) / n
    ih = np.kron(np.eye(len(classes)), h)
    centred = ih @ k @ ih
    y_onehot = np.eye(max(classes) + 1)[labels.numpy()][:, classes]
    y = (y_onehot - y_onehot.mean(axis=0)).T.reshape(-1)
    return float(y @ centred @ y / (np.linalg.norm(centred) * (y @ y)))


def sample_data(n: int = 10, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 5, 5, generator=g)
    y = torch.arange(n) % classes
    return x, y[torch.randperm(n, generator=g)]


def shared_cnn(classes: int = 4) -> SharedCNN:
    torch.manual_seed(1)
    return SharedCNN(classes)


# ----------------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------------
def test_linear_model_kernel_and_alignment_have_the_closed_form():
    torch.manual_seed(0)
    n, d, c = 9, 6, 3
    x = torch.randn(n, d)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    model = nn.Linear(d, c)
    closed = torch.kron(torch.eye(c), x @ x.T + 1.0)
    kernel = tangent_kernel(model, x)
    torch.testing.assert_close(kernel, closed, rtol=1e-12, atol=1e-12)
    result = tangent_alignment(model, x, y, c)
    assert result.alignment == pytest.approx(reference_alignment(closed, y, [0, 1, 2]), rel=1e-12)
    assert result.trace_per_sample == pytest.approx(c * float((x * x).sum(1).add(1).mean()), rel=1e-12)
    assert result.output_reduction == "none" and result.outputs == [0, 1, 2]


def test_cnn_with_batch_norm_and_shared_module_matches_explicit_jacobian():
    model = shared_cnn()
    x, _ = sample_data()
    expected = reference_kernel(model, x)
    for budget in (1024.0, 0.02):  # one tile; cached groups of several tiles
        kernel = tangent_kernel(model, x, memory_budget_mb=budget)
        torch.testing.assert_close(kernel, expected, rtol=1e-6, atol=1e-9)
    few = x[:4]  # recomputed 1-row tiles
    torch.testing.assert_close(
        tangent_kernel(model, few, memory_budget_mb=1e-5), reference_kernel(model, few), rtol=1e-6, atol=1e-9
    )


def test_budget_changes_tiling_and_progress_counts_every_tile():
    model = shared_cnn()
    x, _ = sample_data(n=4)
    calls: list[tuple[int, int]] = []
    tangent_kernel(model, x, memory_budget_mb=1e-5, progress=lambda done, total: calls.append((done, total)))
    rows = 4 * 4
    # every module is its own group of 1-row tiles, recomputed per tile pair: rows (rows + 1) / 2 each
    assert calls[-1] == (4 * rows * (rows + 1) // 2,) * 2
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    calls.clear()
    tangent_kernel(model, x, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]  # the whole Jacobian fits: one tile, computed once


def test_kernel_leaves_the_model_untouched_and_uses_eval_mode():
    model = shared_cnn().train()
    x, _ = sample_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kernel = tangent_kernel(model, x)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(kernel, reference_kernel(model, x), rtol=1e-6, atol=1e-9)


def test_module_kernels_are_per_module_jacobians_and_sum_to_the_full_kernel():
    model = shared_cnn()
    x, _ = sample_data()
    kernels = module_tangent_kernels(model, x, memory_budget_mb=0.02)
    assert list(kernels) == ["conv1", "bn", "shared", "head"]  # call order; the shared conv once
    assert modules_in_call_order(model, x) == list(kernels)
    torch.testing.assert_close(sum(kernels.values()), tangent_kernel(model, x), rtol=1e-10, atol=1e-10)
    shared = reference_kernel(model, x, ["shared.weight", "shared.bias"])  # both calls' derivative
    torch.testing.assert_close(kernels["shared"], shared, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(kernels["bn"], reference_kernel(model, x, ["bn.weight", "bn.bias"]))


def test_frozen_parameters_are_not_tangent_features():
    model = shared_cnn()
    x, _ = sample_data()
    model.conv1.requires_grad_(False)
    kernels = module_tangent_kernels(model, x)
    assert list(kernels) == ["bn", "shared", "head"]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    torch.testing.assert_close(tangent_kernel(model, x), reference_kernel(model, x, names))


def test_selected_outputs_give_the_sub_block_of_the_full_kernel():
    model = shared_cnn()
    x, _ = sample_data()
    full = tangent_kernel(model, x).reshape(4, 10, 4, 10)
    sub = tangent_kernel(model, x, outputs=[3, 1]).reshape(2, 10, 2, 10)
    torch.testing.assert_close(sub, full[[3, 1]][:, :, [3, 1]])


# ----------------------------------------------------------------------------------------------------
# Alignment and spectrum
# ----------------------------------------------------------------------------------------------------
def test_centring_and_targets_follow_the_kronecker_definition():
    torch.manual_seed(3)
    a = torch.randn(12, 12)
    kernel = a @ a.T
    h = torch.eye(4) - torch.ones(4, 4) / 4
    ih = torch.kron(torch.eye(3), h)
    torch.testing.assert_close(centre_kernel(kernel, 4), ih @ kernel @ ih)
    y = centred_targets(torch.tensor([0, 2, 2, 0]), 4, outputs=[0, 1, 2])
    # class 0: one-hot [1, 0, 0, 1] - 0.5; class 1 (absent): zeros; class 2: [0, 1, 1, 0] - 0.5
    torch.testing.assert_close(y, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.5, 0.5, 0.5, -0.5]))


def test_alignment_is_invariant_to_sample_order_and_kernel_scale():
    model = shared_cnn()
    x, y = sample_data(n=12)
    base = tangent_alignment(model, x, y, 4)
    kernel = tangent_kernel(model, x)
    assert base.alignment == pytest.approx(reference_alignment(kernel, y, [0, 1, 2, 3]), rel=1e-9)

    perm = torch.randperm(12, generator=torch.Generator().manual_seed(5))
    permuted = tangent_alignment(model, x[perm], y[perm], 4)
    assert permuted.alignment == pytest.approx(base.alignment, rel=1e-10)
    assert permuted.effective_rank == pytest.approx(base.effective_rank, rel=1e-9)
    assert permuted.trace_per_sample == pytest.approx(base.trace_per_sample, rel=1e-10)
    for name, value in base.layer_alignments.items():
        assert permuted.layer_alignments[name] == pytest.approx(value, rel=1e-9)

    scaled = tangent_alignment(Scaled(model, 3.0), x, y, 4)  # K -> 9 K
    assert scaled.alignment == pytest.approx(base.alignment, rel=1e-10)
    assert scaled.effective_rank == pytest.approx(base.effective_rank, rel=1e-9)
    assert scaled.trace_per_sample == pytest.approx(9.0 * base.trace_per_sample, rel=1e-10)
    centred, targets = centre_kernel(kernel, 12), centred_targets(y, 4)
    assert kernel_target_alignment(7.5 * centred, targets) == pytest.approx(base.alignment, rel=1e-12)


def test_layer_alignments_are_the_alignments_of_the_module_kernels():
    model = shared_cnn()
    x, y = sample_data(n=12)
    result = tangent_alignment(model, x, y, 4, memory_budget_mb=0.02)
    kernels = module_tangent_kernels(model, x)
    assert list(result.layer_alignments) == list(kernels)
    for name, kernel in kernels.items():
        assert result.layer_alignments[name] == pytest.approx(
            reference_alignment(kernel, y, [0, 1, 2, 3]), rel=1e-9
        )


def test_spectrum_summary_of_a_known_spectrum():
    torch.manual_seed(4)
    s = 1.0 / torch.arange(1, 201, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(200, 200))
    kernel = q @ torch.diag(s) @ q.T
    summary = spectrum_summary(kernel, kernel_trace=50.0, num_samples=25)
    p = s / s.sum()
    assert summary["effective_rank"] == pytest.approx(math.exp(-float((p * p.log()).sum())), rel=1e-9)
    for k in (40, 80, 160):
        assert summary[f"trace_ratio_{k}"] == pytest.approx(float(s[:k].sum() / s.sum()), rel=1e-9)
    assert summary["trace_per_sample"] == 2.0
    two = spectrum_summary(torch.diag(torch.tensor([3.0, 1.0, 0.0])), 4.0, 1)
    assert two["effective_rank"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert two["trace_ratio_40"] == 1.0


def test_class_subset_beyond_max_outputs():
    torch.manual_seed(6)
    n, d, c = 30, 5, 25
    x = torch.randn(n, d)
    y = torch.arange(n) % c
    model = nn.Linear(d, c)
    chosen = choose_outputs(c, 20, seed=3)
    assert chosen == sorted(int(k) for k in np.random.default_rng(3).choice(25, 20, replace=False))
    result = tangent_alignment(model, x, y, c, max_outputs=20, seed=3)
    assert result.output_reduction == "class_subset" and result.outputs == chosen
    closed = torch.kron(torch.eye(20), x @ x.T + 1.0)
    assert result.alignment == pytest.approx(reference_alignment(closed, y, chosen), rel=1e-10)


def test_undefined_cases_are_clear_errors():
    model = shared_cnn()
    x, y = sample_data()
    with pytest.raises(MeasureError, match="one class only"):
        tangent_alignment(model, x, torch.zeros(10, dtype=torch.int64), 4)
    with pytest.raises(MeasureError, match="not logits of the dataset's 6 classes"):
        tangent_alignment(model, x, y, 6)
    with pytest.raises(MeasureError, match="memory_budget_mb"):
        tangent_kernel(model, x, memory_budget_mb=0)
    with pytest.raises(MeasureError, match="no trainable parameters"):
        tangent_kernel(nn.Flatten(), x)


# ----------------------------------------------------------------------------------------------------
# Measure functions
# ----------------------------------------------------------------------------------------------------
class FakeContext:
    """The parts of gscore.measures.context.MeasureContext the ntk measures use."""

    def __init__(self, model: nn.Module, probe: ProbeSet, cancel_after: int | None = None) -> None:
        self.model, self.probe, self.device = model, probe, torch.device("cpu")
        self.cache: dict = {}
        self.requests: list[tuple] = []
        self.reports: list[tuple[str, int, int]] = []
        self.cancel_after = cancel_after

    def probe_set(self, split: str, samples: int | None, seed: int) -> ProbeSet:
        self.requests.append((split, samples, seed))
        return self.probe

    def report(self, stage: str, done: int, total: int) -> None:
        self.reports.append((stage, done, total))

    def check_cancel(self) -> None:
        if self.cancel_after is not None and len(self.reports) >= self.cancel_after:
            raise JobCancelled("the job was cancelled")


def probe_of(x: torch.Tensor, y: torch.Tensor, classes: int) -> ProbeSet:
    return ProbeSet("test", "train", x.to(torch.float32), y, None, classes)


def test_measures_share_one_kernel_and_report_its_figures():
    model = shared_cnn().float()
    x, y = sample_data(n=12)
    ctx = FakeContext(model, probe_of(x, y, 4))
    params = {"samples": 100, "split": "train", "seed": 0, "max_outputs": 20}
    alignment = ntk_alignment_measure(ctx, params)
    layers = ntk_layer_alignment_measure(ctx, params)
    rank = ntk_effective_rank_measure(ctx, params)
    assert ctx.requests == [("train", 100, 0)]  # one probe set, one kernel sweep for the three measures
    assert ctx.reports[-1][0] == "tangent_kernel" and ctx.reports[-1][1] == ctx.reports[-1][2]
    direct = tangent_alignment(model.double(), x, y, 4)
    assert isinstance(alignment, MeasureOutcome)
    assert alignment.value == pytest.approx(direct.alignment, rel=1e-4)
    assert [row["module"] for row in layers.meta["layers"]] == ["conv1", "bn", "shared", "head"]
    assert layers.value == pytest.approx(np.mean(list(direct.layer_alignments.values())), rel=1e-4)
    assert rank.value == pytest.approx(direct.effective_rank, rel=1e-4)
    assert rank.meta["trace_ratio_40"] == pytest.approx(direct.trace_ratios[40], rel=1e-4)
    assert rank.meta["trace_ratio_80"] == 1.0  # NC = 48 < 80 eigenvalues
    assert rank.meta["trace_per_sample"] == pytest.approx(direct.trace_per_sample, rel=1e-4)
    assert alignment.meta["output_reduction"] == "none" and alignment.meta["samples"] == 12


def test_measures_are_undefined_for_non_logits_and_one_class():
    x, y = sample_data()
    wrong_outputs = FakeContext(shared_cnn(classes=3).float(), probe_of(x, y, 4))
    with pytest.raises(MeasureUndefined, match="not logits"):
        ntk_alignment_measure(wrong_outputs, {})
    with pytest.raises(MeasureUndefined, match="not logits"):  # cached reason, same answer
        ntk_effective_rank_measure(wrong_outputs, {})
    one_class = FakeContext(shared_cnn().float(), probe_of(x, torch.zeros(10, dtype=torch.int64), 4))
    with pytest.raises(MeasureUndefined, match="one class only"):
        ntk_layer_alignment_measure(one_class, {})


def test_cancellation_stops_the_sweep():
    x, y = sample_data()
    ctx = FakeContext(shared_cnn().float(), probe_of(x, y, 4), cancel_after=3)
    with pytest.raises(JobCancelled):
        ntk_alignment_measure(ctx, {"memory_budget_mb": 1e-5})
    assert len(ctx.reports) == 3


def test_measures_on_the_real_measure_context_with_digits():
    from pathlib import Path

    from gscore import models
    from gscore.inputs import datasets
    from gscore.measures.context import MeasureContext, ProbeKey

    probe = datasets.load_probe_set("digits", "train")
    torch.manual_seed(0)
    arch = {"family": "cnn", "in_channels": 1, "width": 8, "depth": 2, "num_classes": probe.num_classes}
    model = models.build_model(arch).float().eval()
    ctx = MeasureContext(
        model=model,
        device=torch.device("cpu"),
        dataset="digits",
        data_dir=Path("."),
        probe=probe,
        probe_key=ProbeKey("train", None, 0),
        samples_per_class=None,
        batch_size=256,
        seed=0,
        plan=[],
    )
    params = {"samples": 50, "split": "train", "seed": 3, "max_outputs": 20, "memory_budget_mb": 1024.0}
    alignment = ntk_alignment_measure(ctx, params)
    rank = ntk_effective_rank_measure(ctx, params)
    sample = ctx.probe_set("train", 50, 3)
    assert len(sample) == 50 and alignment.meta["samples"] == 50
    x = torch.cat(list(sample.batches(50)))
    direct = tangent_alignment(model, x, sample.y, probe.num_classes)
    assert alignment.value == pytest.approx(direct.alignment, rel=1e-9)
    assert rank.value == pytest.approx(direct.effective_rank, rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# Cross-checks
# ----------------------------------------------------------------------------------------------------
def test_matches_nngeometry_gram_matrix():
    gram = pytest.importorskip("nngeometry.gram")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)
    ).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    x, y = sample_data(n=8, classes=5)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    theirs = gram.GramMatrix(model, loader, function=lambda *batch: model(batch[0])).data  # [C, N, C, N]
    ours = tangent_kernel(model, x)
    torch.testing.assert_close(ours, theirs.reshape(40, 40).to(torch.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernel_matches_cpu():
    model = shared_cnn()
    x, y = sample_data(n=12)
    cpu = tangent_alignment(model, x, y, 4)
    cuda_model = shared_cnn().cuda()
    kernel = tangent_kernel(cuda_model, x, memory_budget_mb=0.02)
    assert kernel.is_cuda
    torch.testing.assert_close(kernel.cpu(), tangent_kernel(model, x), rtol=1e-6, atol=1e-9)
    cuda = tangent_alignment(cuda_model, x, y, 4)
    assert cuda.alignment == pytest.approx(cpu.alignment, rel=1e-6)
    assert cuda.effective_rank == pytest.approx(cpu.effective_rank, rel=1e-6)
