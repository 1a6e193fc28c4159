"""Tangent kernel: gscore's memory-bounded sweep versus the naive full Jacobian, time and peak memory.

For the paper's VGG-9 (``gscore.models.parse_arch_spec({"family": "vgg", "depth": 9, "width": 32, ...})``) and a
torchvision ResNet-18, both with C = 10 outputs, on N random 3 x 32 x 32 inputs:

- ours: ``gscore.measures.tangent_alignment.tangent_kernel(model, x, memory_budget_mb=...)``;
- naive: the whole Jacobian at once, ``vmap(jacrev(f))`` over the samples ({name: [N, C, *shape]}, the
  torch.func tutorial's empirical NTK), then ``K = sum_t J_t J_t^T`` per tensor in float64. Skipped, with
  the reason printed, when its estimated memory exceeds ``--naive-limit-gb``.

Both then compute the centred alignment (labels i mod C) and the effective rank with the same functions.
Each route runs in its own subprocess, so that its peak memory is its own: on CPU the peak resident set
minus the resident set just before the route (ru_maxrss), on CUDA ``max_memory_allocated`` minus the
memory allocated before. The kernels are compared in the parent (max |K_ours - K_naive| / max |K_naive|).

    python benchmarks/bench_tangent_alignment.py --device cpu --samples 100
    python benchmarks/bench_tangent_alignment.py --device cuda --samples 100 --budget-mb 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from typing import Any

import torch
from timing import timed  # benchmarks/timing.py (scripts run from this folder)
from torch.func import functional_call, jacrev, vmap

from gscore import models
from gscore.measures.tangent_alignment import (
    _probe_forward,
    centre_kernel,
    centred_targets,
    kernel_target_alignment,
    spectrum_summary,
    tangent_kernel,
)

CLASSES = 10
SPECS: dict[str, dict[str, Any]] = {
    "vgg9": {"family": "vgg", "depth": 9, "width": 32, "num_classes": CLASSES},
    "resnet18": {"family": "torchvision", "name": "resnet18", "num_classes": CLASSES},
}


def build(
    name: str, samples: int, device: torch.device
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = models.build_model(models.parse_arch_spec(SPECS[name])).eval().to(device)
    x = torch.rand(samples, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    return model, x, torch.arange(samples) % CLASSES


def naive_kernel(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The whole Jacobian in memory, then per-tensor float64 products; [C N, C N] indexed c * N + i."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def logits_of_one(p: dict[str, torch.Tensor], x1: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (x1.unsqueeze(0),))[0]

    jac = vmap(jacrev(logits_of_one), in_dims=(None, 0))(params, x)
    n = x.shape[0]
    kernel = torch.zeros(CLASSES, n, CLASSES, n, dtype=torch.float64, device=x.device)
    for j in jac.values():
        j = j.flatten(2).to(torch.float64)  # [N, C, P_t]
        kernel += torch.einsum("icp,jdp->cidj", j, j)
        del j
    return kernel.reshape(CLASSES * n, CLASSES * n)


def naive_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Estimate: the float32 Jacobian, the float64 copy of the largest tensor's columns, the activations."""
    rows = x.shape[0] * CLASSES
    sizes = [p.numel() for p in model.parameters()]
    _, activation_bytes, _ = _probe_forward(model, x[:1])
    return rows * (4 * sum(sizes) + 8 * max(sizes) + 3 * activation_bytes)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_route(args: argparse.Namespace) -> None:
    """Child process: one route on one model; prints a JSON line, saves the kernel to ``args.out``."""
    device = torch.device(args.device)
    model, x, y = build(args.model, args.samples, device)
    with torch.no_grad():
        model(x[:2])  # warm-up allocations outside the measured peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resident_bytes()
    if args.route == "ours":
        kernel, seconds = timed(lambda: tangent_kernel(model, x, memory_budget_mb=args.budget_mb), device)
    else:
        kernel, seconds = timed(lambda: naive_kernel(model, x), device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    centred = centre_kernel(kernel, args.samples)
    alignment = kernel_target_alignment(centred, centred_targets(y, CLASSES))
    spectrum = spectrum_summary(centred, float(kernel.diagonal().sum()), args.samples)
    torch.save(kernel.cpu(), args.out)
    print(json.dumps({"seconds": seconds, "peak": peak, "alignment": alignment, **spectrum}))


def spawn(args: argparse.Namespace, model: str, route: str, out: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--device", args.device,
        "--samples", str(args.samples),
        "--budget-mb", str(args.budget_mb),
        "--threads", str(args.threads),
        "--model", model,
        "--route", route,
        "--out", out,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--samples", type=int, default=100, help="N (C = 10): the paper's N = 100")
    parser.add_argument("--models", default="vgg9,resnet18", help=f"comma-separated, of {', '.join(SPECS)}")
    parser.add_argument("--budget-mb", type=float, default=1024.0, help="memory_budget_mb of ours")
    parser.add_argument("--naive-limit-gb", type=float, default=None, help="default: half the free memory")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--route", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.route:
        run_route(args)
        return
    device = torch.device(args.device)
    limit = args.naive_limit_gb * 2**30 if args.naive_limit_gb else available_bytes(device) / 2
    print(
        f"tangent kernel, N = {args.samples}, C = {CLASSES}, device {device}, threads {args.threads}, "
        f"ours: memory_budget_mb = {args.budget_mb:g}; naive limit {limit / 2**30:.1f} GiB"
    )
    for name in args.models.split(","):
        model, x, _ = build(name, args.samples, torch.device("cpu"))
        params = sum(p.numel() for p in model.parameters())
        need = naive_bytes(model, x)
        print(f"\n{name}: P = {params:,} parameters, NC = {args.samples * CLASSES}")
        with tempfile.TemporaryDirectory() as tmp:
            ours = spawn(args, name, "ours", f"{tmp}/ours.pt")
            report("ours", ours)
            if need > limit:
                print(f"  naive: skipped (needs ~{need / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB)")
                continue
            naive = spawn(args, name, "naive", f"{tmp}/naive.pt")
            report("naive", naive)
            if "error" in ours or "error" in naive:
                continue
            k_ours, k_naive = torch.load(f"{tmp}/ours.pt"), torch.load(f"{tmp}/naive.pt")
            kernel_diff = float((k_ours - k_naive).abs().max() / k_naive.abs().max())
            print(
                f"  naive / ours: time {naive['seconds'] / ours['seconds']:.2f}x, "
                f"peak memory {naive['peak'] / max(ours['peak'], 1):.1f}x"
            )
            print(
                f"  max |K_ours - K_naive| / max |K_naive| = {kernel_diff:.1e}; relative differences: "
                + ", ".join(
                    f"{key} {abs(ours[key] - naive[key]) / abs(naive[key]):.1e}"
                    for key in ("alignment", "effective_rank", "trace_ratio_40", "trace_per_sample")
                )
            )


def report(route: str, result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"  {route}: failed: {result['error']}")
        return
    print(
        f"  {route:5s}: {result['seconds']:8.2f} s, peak memory {result['peak'] / 2**20:9.1f} MiB, "
        f"alignment {result['alignment']:.9f}, effective rank {result['effective_rank']:.6f}, "
        f"T_40 {result['trace_ratio_40']:.6f}, Tr K / N {result['trace_per_sample']:.6g}"
    )


if __name__ == "__main__":
    main()
