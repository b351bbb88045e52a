"""train(config) -> final metrics: one run of the game, with report and checkpoint callbacks and exact resume.

Training counts in units: iterations for 2D, epochs for images. Events happen at unit boundaries: the
VampPrior → MoG switch at `warmup − mog_warmup`, the start of the game (clip bounds) at `warmup`, the learning
rate schedule, reports, checkpoints. Losses stay on the device and are read every `LOG_EVERY` steps, where a
NaN or infinite loss raises TrainingDiverged naming the first bad step and loss.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.checkpoint import save_checkpoint
from core.config import TrainConfig
from core.errors import TrainingDiverged
from core.game import Game
from core.protocol import full_evaluation, select_checkpoint
from core.task import make_task

LOG_EVERY = 50
LOSS_NAMES = ("loss_encoder", "loss_decoder", "rec", "kl_real", "kl_fake")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LossMonitor:
    """Running means of the step's losses on the device, and the first non-finite one, read only at `flush`."""

    def __init__(self, device: torch.device):
        self.device = device
        self._indices: dict[tuple[str, ...], torch.Tensor] = {}
        self.reset()
        self.first_bad_step = torch.tensor(-1, device=device)
        self.first_bad_loss = torch.tensor(0, device=device)
        self.first_bad_value = torch.tensor(0.0, device=device)

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0) + value.float()
            self.counts[name] = self.counts.get(name, 0) + 1
        present = tuple(n for n in LOSS_NAMES if n in losses)
        values = torch.stack([losses[n].float() for n in present])
        if present not in self._indices:  # built once: a blocking host-to-GPU copy would sync every step
            self._indices[present] = torch.tensor([LOSS_NAMES.index(n) for n in present], device=self.device)
        indices = self._indices[present]
        bad = ~torch.isfinite(values)
        is_first = bad.any() & (self.first_bad_step < 0)
        which = bad.int().argmax()
        self.first_bad_step = torch.where(is_first, step, self.first_bad_step)
        self.first_bad_loss = torch.where(is_first, indices[which], self.first_bad_loss)
        self.first_bad_value = torch.where(is_first, values[which], self.first_bad_value)

    def flush(self) -> dict[str, float]:
        """Host sync: raise on divergence, else return and clear the running means."""
        if self.first_bad_step.item() >= 0:
            raise TrainingDiverged(
                int(self.first_bad_step), LOSS_NAMES[int(self.first_bad_loss)], float(self.first_bad_value)
            )
        means = {name: float(total) / self.counts[name] for name, total in self.sums.items()}
        self.reset()
        return means


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(task) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "task": task.rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(task, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    task.set_rng_state(state["task"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    config: TrainConfig | dict,
    *,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int | None = None,
    resume: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one model and return its final metrics.

    on_report(metrics) is called every `config.eval_every` units, at each of `metric_epochs` (images: every image
    metric; 0 = before training) and at the end (that one has done=True and, for 2D, gnelbo; for images every image
    metric, chosen as `config.protocol` says: see core/protocol.py); on_checkpoint(state) every `checkpoint_every`
    units (default: with each report) and at each metric epoch, with a dict to `torch.save`; `resume=state`
    continues that run exactly. With `out_dir`, the end of training writes
    metrics.json (with the resolved config), the task's artifacts (2D: samples.npy, figure.png) and checkpoint.pt.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate()
    device = resolve_device(config.device)
    _seed_everything(config.seed)
    task = make_task(config, device)
    game = Game(config, task, device)
    unit, step = 0, 0
    if resume is not None:
        game.load_state_dict(resume["game"])
        _set_rng_state(task, resume["rng"])
        unit, step = resume["unit"], resume["step"]

    total = config.total_units
    checkpoint_every = checkpoint_every or config.eval_every
    metric_units = set(config.metric_epochs)
    monitor = LossMonitor(device)
    latest: dict[str, float] = {}
    # Every metric at each of metric_epochs, kept in the checkpoint: the paper protocol reports the best of them.
    scores: dict[int, dict[str, float]] = dict(resume.get("scores", {})) if resume is not None else {}
    report: dict[str, Any] | None = None
    bar = _progress_bar(total, unit, progress)

    def state() -> dict[str, Any]:
        """A snapshot (copied: the live tensors keep training after the callback returns)."""
        return copy.deepcopy(
            {
                "config": config.to_dict(),
                "unit": unit,
                "step": step,
                "game": game.state_dict(),
                "rng": _rng_state(task),
                "scores": scores,
            }
        )

    def evaluate(done: bool) -> dict[str, Any]:
        metrics = {
            **task.evaluate(game, final=full_evaluation(config, unit, done)),
            "active_modes": game.prior.active_modes(),
        }
        if unit in metric_units:
            scores[unit] = metrics
        if done and config.is_image and config.protocol == "paper":
            metrics = {**metrics, **select_checkpoint(scores)}
        return {**latest, **metrics, config.unit_name: unit, "step": step, "in_game": game.in_game, "done": done}

    def report_and_checkpoint(done: bool) -> None:
        nonlocal report
        if unit % config.eval_every == 0 or done or unit in metric_units:
            latest.update(monitor.flush())
            report = evaluate(done)
            _show(bar, report)
            if on_report is not None:
                on_report(report)
        if on_checkpoint is not None and (unit % checkpoint_every == 0 or done or unit in metric_units):
            latest.update(monitor.flush())
            on_checkpoint(state())

    if unit == 0 and 0 in metric_units and 0 not in scores:  # the untrained model is a scored checkpoint
        report_and_checkpoint(done=False)
    try:
        while unit < total:
            if config.converts_to_mog and unit == config.mog_switch_at and not game.is_mog_switched:
                game.switch_to_mog()
            if config.game_starts and unit == config.warmup and not game.in_game:
                game.start_game()
            game.set_learning_rates(unit)
            for x in task.batches(unit):
                monitor.add(step, game.game_step(x) if game.in_game else game.warmup_step(x))
                step += 1
                if step % LOG_EVERY == 0:
                    latest.update(monitor.flush())
                    _show(bar, latest)
            unit += 1
            if bar is not None:
                bar.update(1)
            report_and_checkpoint(done=unit == total)
    finally:  # also on Ctrl-C or divergence: the caller's message then starts on a line of its own
        if bar is not None:
            bar.close()

    final = report if report is not None and report["done"] else evaluate(done=True)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state(), out / "checkpoint.pt")
        task.write_artifacts(game, out, {**final, "config": config.to_dict()})
    return final


def _progress_bar(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, unit="it", dynamic_ncols=True)


def _show(bar, values: dict[str, Any]) -> None:
    if bar is None:
        return
    shown = {k: f"{v:.4g}" for k, v in values.items() if isinstance(v, float) and math.isfinite(v)}
    keys = ("loss_encoder", "loss_decoder", "rec", "kl_real", "kl_fake", "kl")
    bar.set_postfix({k: shown[k] for k in keys if k in shown}, refresh=False)
