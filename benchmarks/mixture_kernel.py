"""The 2D mixture kernels against their floor: the compiled forwards of `core.mixture` for N posterior samples and
K modes, the full one (logits, softmax written out, log p) and the projected one of a KL whose only gradient is z's
(log p and r·Y, r never written: three of the game step's four calls), beside torch.exp over a tensor of the same
(N, K) size measured in the same run. Every KL of the learnable-prior step evaluates K exponentials per sample,
so the ratio says how much of the mixture terms' time a better kernel could still win.

    python benchmarks/mixture_kernel.py [--samples 102400] [--modes 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe


def median_ms(function, *args, repeats: int = 20) -> float:
    for _ in range(5):
        function(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=102_400, help="N: 2B·M of a stacked KL at batch 512, M 100")
    parser.add_argument("--modes", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from core import mixture

    print(describe(args.threads))
    torch.set_num_threads(args.threads)
    n, k, d = args.samples, args.modes, 2
    z = torch.randn(n, d)
    features = torch.cat([z * z, z, torch.ones(n, 1)], dim=1)
    weights = torch.randn(2 * d + 1, k)
    responsibilities = torch.empty(n, k)
    y_t = torch.randn(2 * d, k)
    full = median_ms(mixture._FUSED_ROWS, features, weights, responsibilities)
    projected = median_ms(mixture._FUSED_PROJECTED, features, weights, y_t)
    floor = median_ms(torch.exp, responsibilities)
    print(f"N {n}, K {k}: torch.exp over (N, K) {floor:.2f} ms")
    print(f"  compiled mixture forward, full       {full:.2f} ms, ratio {full / floor:.2f}")
    print(f"  compiled mixture forward, projected  {projected:.2f} ms, ratio {projected / floor:.2f}")


if __name__ == "__main__":
    main()
