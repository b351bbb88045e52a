"""Throughput of the image step: ms a step, images/s and epoch time, fp32 against bf16 autocast, on random images.

    python benchmarks/image_step.py [--steps 5] [--repeats 2] [--phase game|warmup] [--device auto|cpu|cuda]
                                    [--threads N] [--reference] [--datasets mnist cifar10]

Two input sizes with the paper's settings for them: MNIST-sized (1×28×28, z 32, batch 128, 60,000 images an epoch)
and CIFAR-10-sized (3×32×32, z 128, batch 32, 50,000 images an epoch), each with the paper's prior (VampPrior → MoG,
K = 100, M = 100, λ = 100, adaptive clipping). `game` times the introspective step (encoder + decoder/prior
updates, 200 of the 220 epochs), `warmup` the β-VAE step. Both precisions run the same code: core.game.Game on an
ImageTask whose nets are channels_last, with the data on the device. Epoch time = steps an epoch × mean step time;
"× fp32" is fp32's step time divided by this one's, both measured in this run on this device, in alternating
rounds (the best round of each counts). `--reference` adds the literal reference step (core/reference_step.py, the
oracle of the equivalence tests) in fp32 on the same nets: its "× fp32" below 1 is the fast step's gain on images.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from core.config import resolve_config
from core.game import Game
from core.image_task import ImageSplits, ImageTask
from core.reference_step import ReferenceGame
from core.train import resolve_device

SIZES = {"mnist": 60_000, "cifar10": 50_000}  # dataset whose paper config is used -> train images an epoch
WARMUP_STEPS = 2
PRECISIONS = ("fp32", "bf16")


def random_splits(shape: tuple[int, ...], n: int, seed: int = 0) -> ImageSplits:
    """n uniform random images of `shape` in [0, 1] with random labels, as both train and test split."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, *shape, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return ImageSplits(images, labels, images, labels)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(dataset: str, precision: str, device: torch.device, steps: int, phase: str, reference: bool = False):
    """The game's step for `phase` on a fresh Game (or ReferenceGame), run WARMUP_STEPS times, and full batches of
    random images."""
    config = resolve_config(dataset, "paper", autocast=precision, device=device.type)
    shape = (3, 32, 32) if dataset == "cifar10" else (1, 28, 28)
    n = max(config.batch_size * (steps + WARMUP_STEPS), config.num_components)
    torch.manual_seed(0)
    task = ImageTask(config, device, splits=random_splits(shape, n))
    game = (ReferenceGame if reference else Game)(config, task, device)
    if phase == "game":
        game.switch_to_mog()
        game.start_game()
    step = game.game_step if phase == "game" else game.warmup_step
    batches = [x for x in task.batches(0) if x.shape[0] == config.batch_size]
    for x in batches[:WARMUP_STEPS]:  # untimed: first-call allocations, kernel selection
        step(x)
    return step, batches


def seconds_per_step(step, batches: list[torch.Tensor], device: torch.device, steps: int) -> float:
    """Mean wall time of `steps` steps (the host syncs only around the timed loop)."""
    _synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best round counts")
    parser.add_argument("--phase", choices=("game", "warmup"), default="game")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reference", action="store_true", help="also time the literal reference step (fp32)")
    parser.add_argument("--datasets", nargs="+", choices=list(SIZES), default=list(SIZES))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"image {args.phase} step on {name}; torch {torch.__version__}; channels_last, data on the device; "
        f"best of {args.repeats} alternating rounds of {args.steps} timed steps"
    )
    print(f"{'input':<32} {'step':<14} {'ms/step':>9} {'images/s':>9} {'epoch':>10} {'× fp32':>7}")
    for dataset in args.datasets:
        epoch_images = SIZES[dataset]
        config = resolve_config(dataset, "paper")
        label = f"{'CIFAR-10' if dataset == 'cifar10' else 'MNIST'}-sized, z {config.z_dim}, batch {config.batch_size}"
        steps_per_epoch = math.ceil(epoch_images / config.batch_size)
        runs = {p: make_step(dataset, p, device, args.steps, args.phase) for p in PRECISIONS}
        if args.reference:
            runs["fp32 reference"] = make_step(dataset, "fp32", device, args.steps, args.phase, reference=True)
        best = dict.fromkeys(runs, math.inf)
        for _ in range(args.repeats):  # alternate, keep each one's best: a busy machine slows both alike
            for precision, (step, batches) in runs.items():
                best[precision] = min(best[precision], seconds_per_step(step, batches, device, args.steps))
        for precision, seconds in best.items():
            print(
                f"{label:<32} {precision:<14} {1e3 * seconds:9.1f} {config.batch_size / seconds:9.0f} "
                f"{steps_per_epoch * seconds:9.1f}s {best['fp32'] / seconds:6.2f}×",
                flush=True,
            )


if __name__ == "__main__":
    main()
