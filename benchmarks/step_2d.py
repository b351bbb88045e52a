"""Iterations/s of the fast game step (core.game.Game) against the literal reference step (core.reference_step),
both measured in this run on this machine, and the peak memory of each.

    python benchmarks/step_2d.py [--budget paper|quick] [--threads 2] [--rounds 3] [--steps 20] [--reference-steps 3]
                                 [--torch-nets] [--bf16]

Cases: K = 64 (the paper's learnable prior: VampPrior during warm-up, then a free MoG with adaptive clipping) and
K = 1 (N(0, I)); phases: warm-up (the β-VAE step) and game (encoder + decoder/prior updates). The config is the
budget's 2D config on 8gaussians (paper: batch 512, M = 100). Every (case, phase, step) runs in a fresh subprocess
(so peak memory is its own: resource.getrusage's max RSS, and its rise over the RSS before the first step); the
rounds alternate fast and reference, and each reports the median over rounds of its median step time, so that
load from other processes on the machine falls on both alike. Ratio = fast it/s ÷ reference it/s.

Both steps run the same nets, whose Linear layers compute on oneDNN (core/linear.py); `--torch-nets` adds a run of
each step with torch's own Linear (MKL), the nets the paper's code runs, to separate the step's gain from the nets'.
`--bf16` adds the learnable-prior and two-player cases with the 2D nets under bf16 autocast (`autocast=bf16`, the
opt-in path; worth it only where the CPU has native bf16: avx512_bf16 or AMX in the machine line).
On a machine shared with other processes, 2 threads want OMP_WAIT_POLICY=PASSIVE (OpenMP threads that spin while
waiting for a descheduled partner make every parallel op wait a time slice; 1 thread does not care).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
# The learnable prior of the paper; N(0, I) with the MC KL; and the two-player S-IntroVAE (N(0, I), analytic KL),
# which runs at the official 2D code's speed: the baseline of "learnable / two-player".
CASES = {
    "K=64 vamp→mog": {"prior": "vamp_to_mog"},
    "K=1 N(0,I) MC": {"prior": "standard"},
    "two-player": {"prior": "standard", "kl_estimator": "analytic"},
}
# The same two cases with the nets under bf16 autocast (--bf16).
BF16_CASES = {
    "K=64 bf16": {**CASES["K=64 vamp→mog"], "autocast": "bf16"},
    "two-player bf16": {**CASES["two-player"], "autocast": "bf16"},
}
ALL_CASES = {**CASES, **BF16_CASES}
LEARNABLE, TWO_PLAYER, LEARNABLE_BF16 = "K=64 vamp→mog", "two-player", "K=64 bf16"
PHASES = ("warmup", "game")
UNTIMED_STEPS = 5


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(step_kind: str, case: str, phase: str, budget: str, threads: int, steps: int, nets: str) -> dict:
    """In this process: build the game, run UNTIMED_STEPS, then time `steps` steps one by one."""
    import torch

    import core.linear
    from core.config import resolve_config
    from core.game import Game
    from core.reference_step import ReferenceGame
    from core.task import make_task

    torch.set_num_threads(threads)
    core.linear.ONEDNN = core.linear.ONEDNN and nets == "onednn"
    config = resolve_config("8gaussians", budget, **ALL_CASES[case])
    torch.manual_seed(0)
    device = torch.device("cpu")
    task = make_task(config, device)
    game = (Game if step_kind == "fast" else ReferenceGame)(config, task, device)
    x = next(task.batches(0))
    if phase == "game":
        if config.converts_to_mog:
            game.switch_to_mog()
        game.start_game()
    step = game.game_step if phase == "game" else game.warmup_step
    setup_rss = _rss_mb()
    for _ in range(UNTIMED_STEPS):
        step(x)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": statistics.median(times),
        "peak_mb": peak,
        "step_mb": max(0.0, peak - setup_rss),
        "batch": config.batch_size,
        "mc": config.mc_samples,
    }


def run_in_subprocess(**kwargs) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {kwargs} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="paper", choices=["paper", "quick", "smoke"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the fast step a round")
    parser.add_argument("--reference-steps", type=int, default=3, help="timed steps of the reference step a round")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--torch-nets", action="store_true", help="also time both steps with torch's own Linear")
    parser.add_argument("--bf16", action="store_true", help="also time the K=64 and two-player cases in bf16")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bf16:
        args.cases = args.cases + list(BF16_CASES)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return

    machine = describe(args.threads)  # with the load average at start
    all_nets = ("onednn", "torch") if args.torch_nets else ("onednn",)
    results: dict[tuple[str, str, str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        order = ("fast", "reference") if round_index % 2 == 0 else ("reference", "fast")
        for case in args.cases:
            for phase in PHASES:
                for nets in all_nets:
                    for kind in order:
                        steps = args.steps if kind == "fast" else args.reference_steps
                        result = run_in_subprocess(
                            step_kind=kind,
                            case=case,
                            phase=phase,
                            budget=args.budget,
                            threads=args.threads,
                            steps=steps,
                            nets=nets,
                        )
                        results.setdefault((case, phase, nets, kind), []).append(result)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    first = next(iter(results.values()))[0]
    print(machine)
    print(
        f"8gaussians, budget {args.budget} (batch {first['batch']}, M {first['mc']}), {args.threads} thread(s), "
        f"{args.rounds} rounds; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    header = (
        f"{'case':15s} {'phase':7s} {'nets':7s} {'fast it/s':>10s} {'ref it/s':>9s} {'fast/ref':>9s} "
        f"{'fast peak MB':>13s} {'ref peak MB':>12s} {'fast step MB':>13s} {'ref step MB':>12s}"
    )
    print(header)
    print("-" * len(header))
    for case in args.cases:
        for phase in PHASES:
            for nets in all_nets:
                fast, ref = results[(case, phase, nets, "fast")], results[(case, phase, nets, "reference")]
                fast_its = 1 / statistics.median(r["seconds"] for r in fast)
                ref_its = 1 / statistics.median(r["seconds"] for r in ref)
                print(
                    f"{case:15s} {phase:7s} {nets:7s} {fast_its:10.2f} {ref_its:9.2f} {fast_its / ref_its:8.1f}× "
                    f"{max(r['peak_mb'] for r in fast):13.0f} {max(r['peak_mb'] for r in ref):12.0f} "
                    f"{max(r['step_mb'] for r in fast):13.0f} {max(r['step_mb'] for r in ref):12.0f}"
                )

    its = {key: 1 / statistics.median(r["seconds"] for r in runs) for key, runs in results.items()}
    if {LEARNABLE, TWO_PLAYER} <= set(args.cases):
        for phase in PHASES:
            ratio = its[(LEARNABLE, phase, "onednn", "fast")] / its[(TWO_PLAYER, phase, "onednn", "fast")]
            print(f"learnable prior / two-player, {phase}: {ratio:.2f}")
    if {LEARNABLE_BF16, TWO_PLAYER} <= set(args.cases):
        ratio = its[(LEARNABLE_BF16, "game", "onednn", "fast")] / its[(TWO_PLAYER, "game", "onednn", "fast")]
        print(f"learnable prior in bf16 / two-player in fp32, game: {ratio:.2f}")
    if LEARNABLE in args.cases:
        ratio = its[(LEARNABLE, "game", "onednn", "fast")] / its[(LEARNABLE, "game", "onednn", "reference")]
        print(f"fast / reference, learnable prior, game: {ratio:.1f}")


if __name__ == "__main__":
    main()
