"""Which model a run's reported image metrics describe: the `protocol` config key (docs/method.md §2.3).

- `clean` (the default): every image metric of the model at the end of training, all networks in eval mode; the
  checkpoints at `metric_epochs` add series of the same metrics over training.
- `paper` *(quirk)*: what the paper's tables report. Every image metric is computed at the start of each epoch in
  `metric_epochs` (the paper: 0, 80, 120, 160, 200, 219; the model after the last epoch is never scored), the FID's
  networks (Inception and the VAE) in train mode, where every feature depends on its batch, so they generate,
  reconstruct and extract features in batches of the training batch size, as the paper's code; the run reports the
  checkpoint with the lowest FID: its FID and all its other metrics, with `selected_epoch` naming it.

The paper's image runs also reseed the global random state with the epoch number at every epoch, so its seeds differ
only in their initialisation; priorstudy does not reseed under either protocol, so its ± over seeds is an honest one.

A run records its protocol as the `protocol` param; analysis never puts the two in one table (analysis/tables.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from core import metric_names
from core.config import TrainConfig


def full_evaluation(config: TrainConfig, unit: int, done: bool) -> bool:
    """Whether the evaluation after `unit` units computes every metric, not only the cheap ones.

    2D: at the end (gnelbo). Images: at `metric_epochs`, and at the end under the clean protocol (the paper's
    protocol never scores the final model unless it is one of the metric epochs).
    """
    if not config.is_image:
        return done
    return unit in config.metric_epochs or (done and config.protocol == "clean")


def select_checkpoint(scores: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """The paper's reported numbers from per-epoch scores {epoch: metrics}: the epoch with the lowest fid_gen (or
    fd_classifier_gen; the earliest on a tie; NaN never wins), all of its metrics, and `selected_epoch`."""
    if not scores:
        raise ValueError("no scored checkpoints to select from (metric_epochs is empty)")
    first = scores[min(scores)]
    metric = next((m for m in metric_names.SELECTION if m in first), None)
    if metric is None:
        raise ValueError(
            f"the scored checkpoints carry none of {', '.join(metric_names.SELECTION)} (they have: {', '.join(first)})"
        )
    epoch = min(sorted(scores), key=lambda e: (math.isnan(scores[e][metric]), scores[e][metric]))
    return {**scores[epoch], "selected_epoch": epoch}
