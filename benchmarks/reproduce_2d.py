"""How far a budget is from the data's limit: train named configurations × seeds and print kl, jsd, gnelbo and mode
coverage as mean ± std over seeds, beside the metrics' noise floor (two independent samples of the true density).

    python benchmarks/reproduce_2d.py [--configs sintro-standard,sintro-learnable] [--budget quick] [--seeds 0,1,2]
                                      [--dataset 8gaussians] [--workers 2] [--set KEY=VALUE ...] [--out DIR]

Each trial runs in its own process with one torch thread (`--workers` at a time) and writes its figure, samples and
metrics to DIR/<config>-seed<S>/; DIR/results.json holds every number printed. `learned` counts the seeds whose
model covers all 8 modes with ≥ 80 % of its samples within 0.1 of a mode (8gaussians only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEARNABLE = {
    "model": "sintro",
    "prior": "vamp_to_mog",
    "learnable_weights": True,
    "prior_in_game": True,
    "clip": "adaptive",
}
CONFIGS = {
    "sintro-standard": {"model": "sintro", "prior": "standard"},
    "sintro-standard-analytic": {"model": "sintro", "prior": "standard", "kl_estimator": "analytic"},
    "sintro-learnable": LEARNABLE,
    "sintro-learnable-R10": {**LEARNABLE, "responsibility_weight": 10.0},
    "vae-standard": {"model": "vae", "prior": "standard"},
    "vae-vamp": {"model": "vae", "prior": "vamp", "learnable_weights": True},
}
NOISE_FLOOR_PAIRS = 20
COLUMNS = ("kl", "jsd", "gnelbo_1e7", "modes_covered", "near_mode", "active_modes")


def run_trial(name: str, dataset: str, budget: str, seed: int, overrides: dict, out: str) -> dict:
    """One training in this worker process; returns its final numeric metrics (with mode coverage on 8gaussians)."""
    import torch

    from core.config import resolve_config
    from core.train import train

    torch.set_num_threads(1)
    config = resolve_config(dataset, budget, **{**CONFIGS[name], **overrides, "seed": seed})
    start = time.perf_counter()
    metrics = train(config, out_dir=out)
    result = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    result["seconds"] = time.perf_counter() - start
    result["gnelbo_1e7"] = metrics["gnelbo"] * 1e7
    return result


def noise_floor(dataset: str, n: int) -> dict[str, tuple[float, float]]:
    """kl and jsd between two independent samples of n true points, mean and std over NOISE_FLOOR_PAIRS pairs."""
    import torch

    from core.data.toy2d import grid_scale, sample_toy2d
    from core.metrics.density import histogram_jsd, histogram_kl

    values: dict[str, list[float]] = {"kl": [], "jsd": []}
    for pair in range(NOISE_FLOOR_PAIRS):
        g = torch.Generator().manual_seed(10_000 + pair)
        a, b = (sample_toy2d(dataset, n, generator=g).numpy() for _ in range(2))
        values["kl"].append(histogram_kl(a, b, grid_scale(dataset)))
        values["jsd"].append(histogram_jsd(a, b, grid_scale(dataset)))
    return {k: (statistics.mean(v), statistics.pstdev(v)) for k, v in values.items()}


def summarize(results: list[dict]) -> dict[str, tuple[float, float]]:
    summary = {}
    for column in (*COLUMNS, "seconds"):
        values = [r[column] for r in results if column in r]
        if values:
            summary[column] = (statistics.mean(values), statistics.pstdev(values))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs", default="sintro-standard,sintro-learnable", help=f"comma-separated, from: {', '.join(CONFIGS)}"
    )
    parser.add_argument("--dataset", default="8gaussians")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--seeds", default="0,1,2", help="as the study's --seeds: 3 (0,1,2), 0,3,7 or 0-9")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reproduce_2d")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown configuration(s) {unknown} (expected: {', '.join(CONFIGS)})", file=sys.stderr)
        return 2
    from study.run import StudyError, parse_seeds

    try:
        seeds = list(parse_seeds(args.seeds))
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from core.overrides import parse_assignments

    overrides = parse_assignments(args.set)
    from core.config import resolve_config
    from core.metrics import modes

    resolved = resolve_config(args.dataset, args.budget, **{**CONFIGS[names[0]], **overrides})  # validates
    print(
        f"dataset {args.dataset}, budget {args.budget}, seeds {seeds}, overrides {overrides}; "
        f"{resolved.iterations} iterations ({resolved.warmup} warm-up), batch {resolved.batch_size}, "
        f"M {resolved.mc_samples}, lr {resolved.lr}, milestones {list(resolved.lr_milestones)}",
        flush=True,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = {}
    context = get_context("spawn")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        for name in names:
            for seed in seeds:
                out = str(args.out / f"{name}-seed{seed}")
                jobs[(name, seed)] = pool.submit(run_trial, name, args.dataset, args.budget, seed, overrides, out)
        results = {key: job.result() for key, job in jobs.items()}

    floor = noise_floor(args.dataset, resolved.eval_samples)
    print(
        f"\nnoise floor (two independent samples of {resolved.eval_samples} true points, {NOISE_FLOOR_PAIRS} pairs): "
        f"kl {floor['kl'][0]:.2f} ± {floor['kl'][1]:.2f}, jsd {floor['jsd'][0]:.2f} ± {floor['jsd'][1]:.2f}"
    )
    print("\nconfiguration               " + "".join(f"{c:>18}" for c in COLUMNS) + "   learned   s/trial")
    table = {}
    for name in names:
        rows = [results[(name, seed)] for seed in seeds]
        summary = summarize(rows)
        cells = "".join(
            f"{summary[c][0]:>10.2f} ± {summary[c][1]:<5.2f}" if c in summary else f"{'-':>18}" for c in COLUMNS
        )
        learned = sum(args.dataset == "8gaussians" and modes.learned(r) for r in rows)
        print(f"{name:<28}{cells}   {learned}/{len(rows):<7} {summary['seconds'][0]:>6.0f}")
        table[name] = {"summary": summary, "per_seed": dict(zip(seeds, rows)), "learned": learned}
    print("\nper seed (kl / near_mode / modes_covered):")
    for name in names:
        rows = [results[(name, s)] for s in seeds]
        cells = ", ".join(
            f"{s}: {r['kl']:.1f} / {r.get('near_mode', float('nan')):.2f} / {r.get('modes_covered', '-')}"
            for s, r in zip(seeds, rows)
        )
        print(f"  {name}: {cells}")
    record = {
        "dataset": args.dataset,
        "budget": args.budget,
        "seeds": seeds,
        "overrides": overrides,
        "config": resolved.to_dict(),
        "noise_floor": floor,
        "results": table,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"\nwrote {args.out / 'results.json'} and each trial's figure.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
