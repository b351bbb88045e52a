"""Study overhead: what Ray Tune + MLflow cost around the trainings of a study.

Runs a study (local Ray, sqlite MLflow, in a temporary folder) and reports
  - its wall time (with and without starting Ray) against the sum of its trials' training times (time inside
    core.train, reported by each trial as train_time_s), and the ideal wall time = that sum / concurrent trials;
  - the share of the trial slots busy with training: sum of training times / (fit wall time × concurrent trials),
    and where the rest of a trial's time goes (inside the trainable but outside core.train: MLflow, checkpoints;
    outside the trainable: starting the trial's process, scheduling);
  - the share of the study's CPU time spent in training: sum of train_cpu_s / CPU time of this process and all it
    started (Ray's processes, the trials), so other users of a shared machine do not count;
then the same trainings in a plain process pool beside it (no Ray, no MLflow) as the baseline, and the ratio.

    python benchmarks/study_overhead.py                  # 4 trials of 600 iterations, 2 at a time (~3 min)
    python benchmarks/study_overhead.py --space ablation_regularizers --budget quick --no-set   # the default study
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "priorstudy-mpl"))

import threading

import psutil  # a Ray dependency

from core.overrides import parse_assignments
from search_spaces import design, get
from study.run import build_parser, connect_ray, parse_seeds, run_study
from study.storage import StudyFolder

DEFAULT_SET = ["responsibility_weight=0", "iterations=600", "warmup=300", "eval_every=150"]


class TreeCPU:
    """CPU seconds of this process and every process it starts (Ray's, the trials'), sampled every `period` s
    while they live: a process's last sample stands for it once it is gone (it misses at most `period` s)."""

    def __init__(self, period: float = 0.5):
        self.period, self.seen, self.stopped = period, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self.stopped.wait(self.period):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self.start = sum(self.seen.values())
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()
        self._sample()
        self.seconds = sum(self.seen.values()) - self.start


def _train_one(config_dict: dict, threads: int) -> tuple[float, float]:
    import torch

    from core.train import train

    torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    train(config_dict)
    return time.perf_counter() - wall, time.process_time() - cpu


def baseline(configs: list, workers: int, threads: int) -> float:
    """The same trainings in a process pool of `workers`, `threads` torch threads each: wall seconds."""
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_train_one, [c.to_dict() for c in configs], [threads] * len(configs)))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="ablation_regularizers")
    p.add_argument("--dataset", default="8gaussians")
    p.add_argument("--budget", default="quick")
    p.add_argument("--seeds", default="2")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"config overrides (default: {' '.join(DEFAULT_SET)})",
    )
    p.add_argument("--no-set", action="store_true", help="no overrides: the space exactly as `study.run` runs it")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--no-baseline", action="store_true")
    args = p.parse_args()
    overrides = [] if args.no_set else (args.overrides or DEFAULT_SET)

    d = design(
        get(args.space), args.dataset, args.budget, seeds=parse_seeds(args.seeds), fixed=parse_assignments(overrides)
    )
    configs = d.validate()
    cores = os.cpu_count() or 1
    slots = max(1, int(cores // args.cpus_per_trial))
    concurrent = min(slots, len(configs))
    threads = max(1, int(args.cpus_per_trial))
    print(
        f"{args.space} on {args.dataset}/{args.budget} {' '.join(overrides)}: {len(configs)} trials, "
        f"{concurrent} at a time, {threads} torch thread(s) each, {cores} cores"
    )

    with tempfile.TemporaryDirectory(prefix="study-overhead-") as tmp:
        study_args = build_parser().parse_args(
            [
                "--space",
                args.space,
                "--storage",
                f"{tmp}/ray_results",
                "--tracking-uri",
                f"sqlite:///{tmp}/mlruns.db",
                "--cpus-per-trial",
                str(args.cpus_per_trial),
            ]
        )
        with TreeCPU() as cpu:
            start = time.perf_counter()
            connect_ray(None)
            ray_started = time.perf_counter()
            results, _ = run_study(d, study_args, "overhead", StudyFolder.of(Path(tmp) / "ray_results", "overhead"))
            end = time.perf_counter()
        study_cpu = cpu.seconds
        import ray

        ray.shutdown()
    failed = [r for r in results if r.error is not None]
    if failed:
        raise SystemExit(f"{len(failed)} trials failed: {failed[0].error}")
    train_wall = sum(r.metrics["train_time_s"] for r in results)
    train_cpu = sum(r.metrics["train_cpu_s"] for r in results)
    in_trainable = sum(r.metrics["time_total_s"] for r in results) - train_wall
    wall, fit_wall = end - start, end - ray_started
    print(
        f"study wall time            {wall:8.1f} s  (Tune fit {fit_wall:.1f} s, Ray start {ray_started - start:.1f} s)"
    )
    print(
        f"sum of training times      {train_wall:8.1f} s  -> ideal wall {train_wall / concurrent:.1f} s "
        f"with {concurrent} concurrent trials"
    )
    slot_seconds = fit_wall * concurrent
    print(
        f"trial slots busy training  {train_wall / slot_seconds:8.1%}  (of the Tune fit's {slot_seconds:.0f} slot-s; "
        f"per trial {in_trainable / len(results):.1f} s in the trainable outside core.train, "
        f"{(slot_seconds - train_wall - in_trainable) / len(results):.1f} s outside the trainable)"
    )
    print(
        f"study CPU in training      {train_cpu / study_cpu:8.1%}  ({train_cpu:.0f} of {study_cpu:.0f} CPU-s of "
        "the driver, Ray and the trials)"
    )
    print(
        f"cores busy training        {train_cpu / (wall * cores):8.1%}  (train_cpu_s / (wall × {cores} cores); "
        "lower when other processes share the machine)"
    )
    if not args.no_baseline:
        base = baseline(configs, concurrent, threads)
        print(f"baseline: process pool     {base:8.1f} s  (same trainings, no Ray, no MLflow)")
        print(f"study / baseline           {wall / base:8.2f} x")


if __name__ == "__main__":
    main()
