"""What a benchmark gives the game: the `Task` protocol, and `make_task`, which picks the 2D or the image task.

The game (core/game.py) and the training loop (core/train.py) are the same for every benchmark; a task supplies
everything that differs: nets, batches, the loss `scale`, the VampPrior's initial pseudo-inputs, the data RNG,
metrics and artifacts. core/toy_task.py (2D densities) and core/image_task.py (images) implement it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from core.config import TrainConfig


class Task(Protocol):
    scale: float  # multiplies the game's losses: 1/(C·H·W) for images, 0.5 in 2D

    def make_nets(self, config: TrainConfig) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder): the encoder returns (mu, logvar)."""

    def batches(self, unit: int) -> Iterator[torch.Tensor]:
        """The real batches of unit `unit` (one for a 2D iteration, an epoch's for images)."""

    def init_data(self, k: int) -> torch.Tensor:
        """k data points that initialise a VampPrior's pseudo-inputs."""

    def rng_state(self) -> torch.Tensor:
        """The data RNG's state, saved in checkpoints."""

    def set_rng_state(self, state: torch.Tensor) -> None: ...

    def evaluate(self, game: Any, final: bool) -> dict[str, float]:
        """The task's metrics of the game's current model (every metric when `final`)."""

    def write_artifacts(self, game: Any, out_dir: Path, metrics: dict) -> None:
        """Figures, samples and metrics.json of a finished run."""


def make_task(config: TrainConfig, device: torch.device) -> Task:
    if config.is_image:
        from core.image_task import ImageTask  # torchvision and the image metrics only when needed

        return ImageTask(config, device)
    from core.toy_task import ToyTask

    return ToyTask(config, device)
