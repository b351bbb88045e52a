"""The 2D densities as a task of the game (core/task.py): MLP nets, a fresh batch per iteration, kl, jsd, gnelbo
(docs/method.md §2.1, §2.2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.config import EVAL_SEED_OFFSET, TrainConfig
from core.data.toy2d import grid_scale, sample_toy2d
from core.figures import plot_2d_run
from core.losses import kl_and_mean_responsibility, reconstruction_error
from core.metrics.density import (
    PAPER_BATCH_SIZE,
    gnelbo,
    histogram_jsd,
    histogram_kl,
    neg_elbo_grid,
    sample_entropy_kl,
)
from core.metrics.modes import mode_coverage
from core.nets import MLPDecoder, MLPEncoder, warn_if_bf16_is_emulated

VAMP_INIT_BATCH = 512
FIGURE_GRID = 200


class ToyTask:
    """The 2D densities: a fresh batch per iteration, MLP nets, scale 0.5, metrics kl, jsd, gnelbo (8gaussians: and
    mode coverage)."""

    scale = 0.5

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config = config
        self.device = device
        self.grid_scale = grid_scale(config.dataset)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def make_nets(self, config: TrainConfig):
        warn_if_bf16_is_emulated(config.autocast, self.device)
        return MLPEncoder(2, config.z_dim, config.autocast), MLPDecoder(config.z_dim, 2, config.autocast)

    def batches(self, unit: int):
        """One iteration = one fresh batch."""
        yield self.sample(self.config.batch_size, self.generator)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_toy2d(self.config.dataset, n, generator=generator, device=self.device)

    def init_data(self, k: int) -> torch.Tensor:
        """The VampPrior's pseudo-inputs start at K points of one batch of 512, shuffled with the task's generator:
        2spirals' sampler returns one arm and then the other, so its first K points would all sit on one arm."""
        batch = self.sample(max(k, VAMP_INIT_BATCH), self.generator)
        order = torch.randperm(len(batch), generator=self.generator, device=self.device)
        return batch[order[:k]]

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    # --------------------------------------------------------------------------------------- evaluation
    def _eval_generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.config.seed + EVAL_SEED_OFFSET)

    @torch.no_grad()
    def generate(self, game, n: int, generator: torch.Generator) -> np.ndarray:
        return game.decoder(game.prior.sample(n, generator=generator)).cpu().numpy()

    def _pair(self, game, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = self.config.eval_samples
        return self.sample(n, generator).cpu().numpy(), self.generate(game, n, generator)

    def neg_elbo_fn(self, game):
        """negELBO(x) = rec(x, D(mu)) + KL(x): β = 1, decoding mu, MC KL with one shared set of M noise vectors,
        posterior logvar clamped ≥ −80 inside the KL only."""
        prior = game.prior.mixture(with_grad=False)
        eps = torch.randn(
            self.config.mc_samples, self.config.z_dim, generator=self._eval_generator(), device=self.device
        )

        def neg_elbo(x: torch.Tensor) -> torch.Tensor:
            mu, logvar = game.encoder(x)
            rec = reconstruction_error(x, game.decoder(mu))
            shared = eps.expand(x.shape[0], -1, -1)
            return (
                rec + kl_and_mean_responsibility(mu, logvar.clamp(min=-80), prior, shared, mean_responsibility=False)[0]
            )

        return neg_elbo

    @torch.no_grad()
    def evaluate(self, game, final: bool) -> dict[str, float]:
        """kl and jsd on fresh histograms (each its own points); gnelbo too at the end of training."""
        generator = self._eval_generator()
        real, fake = self._pair(game, generator)
        metrics = {"kl": histogram_kl(real, fake, self.grid_scale)}
        metrics["sample_entropy_kl"] = sample_entropy_kl(fake, self.grid_scale)
        if self.config.dataset == "8gaussians":  # whether the model learned the data, read off the same samples
            metrics.update(mode_coverage(fake))
        real, fake = self._pair(game, generator)
        metrics["jsd"] = histogram_jsd(real, fake, self.grid_scale)
        if final:
            metrics["gnelbo"] = gnelbo(
                self.neg_elbo_fn(game),
                self.gnelbo_real_points(generator),
                self.grid_scale,
                grid_size=self.config.gnelbo_grid,
                chunk=self._chunk(game),
            )
        return metrics

    def gnelbo_real_points(self, generator: torch.Generator) -> torch.Tensor:
        """gnelbo's real points: `gnelbo_batches` separately drawn batches of 128, as the paper's code draws them.
        Not one batch of as many points: the rings sampler places a batch's points at n//4 evenly spaced angles a
        ring, so batches of 128 keep 32 fixed angles a ring where one batch of 12,800 would have 3,200."""
        batches = [self.sample(PAPER_BATCH_SIZE, generator) for _ in range(self.config.gnelbo_batches)]
        return torch.cat(batches)

    def _chunk(self, game) -> int:
        """Points per negELBO chunk, so that chunk·M·K logits stay near 16M floats."""
        return max(64, 2**24 // (self.config.mc_samples * game.prior.num_components))

    @torch.no_grad()
    def write_artifacts(self, game, out_dir: Path, metrics: dict) -> None:
        """samples.npy (eval_samples generated points), figure.png, metrics.json."""
        generator = self._eval_generator()
        real, fake = self._pair(game, generator)
        np.save(out_dir / "samples.npy", fake)
        grid = neg_elbo_grid(self.neg_elbo_fn(game), self.grid_scale, FIGURE_GRID, self._chunk(game), self.device)
        density = torch.exp(-(grid - grid.min()))
        prior = game.prior.mixture(with_grad=False)
        plot_2d_run(
            out_dir / "figure.png",
            real,
            fake,
            self.grid_scale,
            density=density.cpu().numpy(),
            prior_means=prior.mu.cpu().numpy(),
            prior_weights=prior.log_w.exp().cpu().numpy(),
            title=f"{self.config.dataset} · {self.config.model} · prior {self.config.prior} · kl {metrics['kl']:.3f}",
        )
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
