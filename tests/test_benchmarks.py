"""The speed benchmarks run end to end (their numbers are read by people, not asserted): the machine line, both
ratios of benchmarks/step_2d.py, and the mixture kernel against its floor."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_step_2d_prints_its_machine_and_its_ratios():
    out = run(
        "benchmarks/step_2d.py",
        "--budget",
        "smoke",
        "--rounds",
        "1",
        "--steps",
        "2",
        "--reference-steps",
        "1",
        "--cases",
        "K=64 vamp→mog",
        "two-player",
        "--bf16",
    )
    assert re.search(r"^machine: .+ \d+ CPUs, .+ fp32 matmul at \d+ GFLOP/s on 2 thread\(s\)$", out, re.M), out
    for phase in ("warmup", "game"):
        assert float(re.search(rf"learnable prior / two-player, {phase}: ([\d.]+)", out)[1]) > 0
    assert float(re.search(r"fast / reference, learnable prior, game: ([\d.]+)", out)[1]) > 0
    assert re.search(r"^K=64 bf16 +game ", out, re.M), out
    assert float(re.search(r"learnable prior in bf16 / two-player in fp32, game: ([\d.]+)", out)[1]) > 0


def test_mixture_kernel_prints_the_kernel_beside_its_floor():
    out = run("benchmarks/mixture_kernel.py", "--samples", "4096", "--modes", "8")
    floor = float(re.search(r"torch.exp over \(N, K\) ([\d.]+) ms", out)[1])
    kernels = re.findall(r"compiled mixture forward, (full|projected) +([\d.]+) ms, ratio ([\d.]+)", out)
    assert [name for name, _, _ in kernels] == ["full", "projected"]
    assert floor > 0 and all(float(ms) > 0 and float(ratio) > 0 for _, ms, ratio in kernels)
