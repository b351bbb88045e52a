"""The machine a benchmark ran on, in one line: CPU model, the instruction sets the kernels care about, cores, and
the float32 matmul rate of a 512×256×256 product (the 2D nets' layer shape) measured now, so that figures from
different machines (or one machine under different load) can be read against each other.

    python benchmarks/machine.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

# Flags of /proc/cpuinfo that decide which oneDNN / inductor kernels a CPU gets.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
MATMUL_SHAPE = (512, 256, 256)  # (batch, in, out): one Linear of the 2D MLPs at batch 512


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of KERNEL_FLAGS it reports (Linux; elsewhere the platform's name, no flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine(), []
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    present = set(flags_line.split(":", 1)[-1].split())
    return model, [f for f in KERNEL_FLAGS if f in present]


def matmul_gflops(threads: int, repeats: int = 50) -> float:
    """Median GFLOP/s of torch.mm at MATMUL_SHAPE in float32 over `repeats` products (after a warm-up)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n, k, m = MATMUL_SHAPE
        a, b = torch.randn(n, k), torch.randn(k, m)
        for _ in range(10):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        return 2 * n * k * m / statistics.median(times) / 1e9
    finally:
        torch.set_num_threads(previous)


def describe(threads: int) -> str:
    """'machine: <model> (<flags>), <n> CPUs, load <l>; 512×256×256 fp32 matmul at <g> GFLOP/s on <t> thread(s)'."""
    import torch

    model, flags = cpu_model_and_flags()
    n, k, m = MATMUL_SHAPE
    return (
        f"machine: {model} ({', '.join(flags) or 'none of ' + '/'.join(KERNEL_FLAGS)}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}; {n}×{k}×{m} fp32 matmul at "
        f"{matmul_gflops(threads):.0f} GFLOP/s on {threads} thread(s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    print(describe(parser.parse_args().threads))
