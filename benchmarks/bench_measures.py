"""Benchmark: extraction vs extraction + c1-c4, and our exact c2/c4 vs scikit-learn's pairwise route.

Prints, in one run, on the VGG-9 spec with N probe images (default 10,000, random 32x32 inputs
with a random 10-superclass / 50-subclass hierarchy; the timing does not depend on the pixels):
  (a) bare extraction time,
  (b) extraction plus all four measures, and the ratio b/a (target <= 1.15),
  (c) our c2 and c4 versus the scikit-learn pairwise reference on the same activations:
      speed ratio (target >= 100x) and the largest absolute difference.

    python benchmarks/bench_measures.py [--samples 10000] [--device cpu|cuda] [--reference-samples N]

``--reference-samples`` runs (c) on the first N samples only, when the pairwise route at the full N
would not fit in memory or time; the default is the full N.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from timing import timed  # benchmarks/timing.py (scripts run from this folder)

from gscore.inputs.extraction import extract_preactivations
from gscore.measures import clustering as measures
from gscore.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import reference_c2, reference_c4  # noqa: E402  (the tests' brute-force oracle)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference-samples", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)

    generator = torch.Generator().manual_seed(0)
    n = args.samples
    x = torch.rand(n, 3, 32, 32, generator=generator)
    sub = torch.randint(0, 50, (n,), generator=generator)
    y = sub // 5
    torch.manual_seed(0)
    model = build_model({"family": "vgg", "depth": 9, "width": 32, "num_classes": 10}).to(device).eval()

    def batches():
        for start in range(0, n, args.batch_size):
            yield x[start : start + args.batch_size]

    def extract():
        return extract_preactivations(model, batches(), num_samples=n, device=device)

    extract()  # warm-up (allocator, kernels)
    acts, t_extract = timed(extract, device)
    pre, layer_of = acts.pre, acts.layer_of
    yd, subd = y.to(pre.device), sub.to(pre.device)

    def all_measures():
        return {
            "c1": measures.subclass_selectivity(pre, yd, subd, k=30),
            "c2": measures.layer_silhouette(pre, layer_of, yd, subd, k=5),
            "c3": measures.neuron_variance(pre, yd, k=30),
            "c4": measures.layer_variance(pre, layer_of, yd, k=5),
        }

    all_measures()  # warm-up
    scores, t_measures = timed(all_measures, device)
    t_total = t_extract + t_measures
    print(f"device {device}, VGG-9 width 32, N = {n}, M = {pre.shape[1]} neurons in {acts.num_layers} layers")
    print(f"(a) bare extraction:            {t_extract:8.3f} s")
    print(f"(b) extraction + c1-c4:         {t_total:8.3f} s   (measures alone {t_measures:.3f} s)")
    print(f"    ratio b/a:                  {t_total / t_extract:8.3f}   (target <= 1.15)")
    print("    scores: " + ", ".join(f"{k} = {v:.6f}" for k, v in scores.items()))

    m = args.reference_samples or n
    pre_r, y_r, sub_r = pre[:m].cpu(), y[:m], sub[:m]
    ours_c2, t_ours_c2 = timed(
        lambda: measures.layer_silhouette(pre_r, layer_of.cpu(), y_r, sub_r, k=5), device
    )
    ours_c4, t_ours_c4 = timed(lambda: measures.layer_variance(pre_r, layer_of.cpu(), y_r, k=5), device)
    ref_c2, t_ref_c2 = timed(lambda: reference_c2(pre_r, layer_of.cpu(), y_r, sub_r, k=5), device)
    ref_c4, t_ref_c4 = timed(lambda: reference_c4(pre_r, layer_of.cpu(), y_r, k=5), device)
    print(f"(c) on N = {m} (CPU): ours vs scikit-learn pairwise reference")
    print(
        f"    c2: ours {t_ours_c2:8.3f} s, reference {t_ref_c2:8.3f} s, speed-up {t_ref_c2 / t_ours_c2:8.1f}x, "
        f"|diff| = {abs(ours_c2 - ref_c2):.2e}"
    )
    print(
        f"    c4: ours {t_ours_c4:8.3f} s, reference {t_ref_c4:8.3f} s, speed-up {t_ref_c4 / t_ours_c4:8.1f}x, "
        f"|diff| = {abs(ours_c4 - ref_c4):.2e}"
    )
    both = (t_ref_c2 + t_ref_c4) / (t_ours_c2 + t_ours_c4)
    print(f"    c2+c4 together: speed-up {both:.1f}x (target >= 100x)")


if __name__ == "__main__":
    main()
