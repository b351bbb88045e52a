"""The three-player game of docs/method.md §1: encoder E, decoder D and the learnable prior p_ψ, and their updates.

    warm-up (β-VAE):  all players minimise  β_rec·mean rec(x, x̂) + β_kl·mean KL(x)
    encoder:   minimise  scale·(β_kl·KL(x) + β_rec·rec(x, x̂))                                 ELBO of real data
                      + (1/α)·½·Σ_{x' ∈ {x_f, x̂}} mean exp(−α·scale·(β_rec·rec(x') + β_neg·KL(x')))   soft fakes
                      + scale·λ·R(r̄)                                                 responsibility regulariser
    decoder (+ prior): minimise  scale·(β_rec·rec(x, x̂) + β_kl·KL(x)
                      + β_kl·½·(KL(x̂) + KL(x_f)) + γ_r·β_rec·½·(rec(x̂) + rec(x_f)))   ELBO of its own samples
with x̂ = D(z), z ~ q(z|x), x_f = D(z_p), z_p ~ p_ψ; the prior cooperates with the decoder (or with the encoder,
`prior_with_encoder`). Each player takes only its own gradients (`torch.autograd.grad` on its parameters), so a
frozen player is never touched; each step draws all its randomness first (`draw_*_noise`) and returns detached
losses (no host sync inside).

The steps below read term by term; the arrangements for speed (one pass over stacked batches, the decoder reusing
the encoder step's x̂, skipped zero-weight terms; docs/method.md §5) live in the helpers of the "passes" section.
core/reference_step.py computes every term literally and is the oracle of tests/test_fast_step.py.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

import torch
from torch import nn

from core.config import TrainConfig
from core.losses import (
    aggregate_negative_entropy,
    exp_elbo,
    kl_and_mean_responsibility,
    kl_standard_normal,
    reconstruction_error,
    reparameterize,
)
from core.priors import Mixture, Prior, VampPrior, build_prior, vamp_to_mog

LR_DECAY = 0.1


class WarmupNoise(NamedTuple):
    """ε of z ~ q(z|x) (B, z); ε of the KL's M samples (B, M, z), None for the analytic KL."""

    z: torch.Tensor
    kl: torch.Tensor | None


class EncoderNoise(NamedTuple):
    """The encoder step's draws; the fakes' and reconstructions' rows are stacked [x_f; x̂] (2B first dimension)."""

    z: torch.Tensor
    kl_real: torch.Tensor | None
    regularizer: torch.Tensor | None  # fresh (B, M, z) for R (2D); None when R is off or reuses the KL's samples
    prior: tuple[torch.Tensor, torch.Tensor]  # (k, ε) of z_p ~ p_ψ
    z_fake_rec: torch.Tensor
    kl_fake_rec: torch.Tensor | None


class DecoderNoise(NamedTuple):
    """The decoder step's draws; rows stacked [x̂; x_f]."""

    prior: tuple[torch.Tensor, torch.Tensor]
    z_rec_fake: torch.Tensor
    kl_rec_fake: torch.Tensor | None
    kl_real: torch.Tensor | None


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class Game:
    """Players, optimisers and the update rules; `state_dict` captures everything needed to resume."""

    def __init__(self, config: TrainConfig, task, device: torch.device):
        self.config = config
        self.task = task
        self.device = device
        self.encoder, self.decoder = (net.to(device) for net in task.make_nets(config))
        self.prior: Prior = build_prior(config, self.encoder, task.init_data).to(device)
        self.is_mog_switched = False
        self.in_game = False
        self.batch_passes = not (has_batch_norm(self.encoder) or has_batch_norm(self.decoder))
        self._reconstruction: tuple[torch.Tensor, torch.Tensor, tuple[int, ...]] | None = None
        self._make_optimizers()

    # ----------------------------------------------------------------------------------------- bookkeeping
    def _make_optimizers(self) -> None:
        """Fresh Adam optimisers (fresh moments): at start and again when the VampPrior becomes a MoG."""
        c = self.config
        # the fused kernel: one pass over a player's parameters (a third of the time of the per-tensor loop on CPU)
        adam = {"betas": (0.9, 0.999), "fused": self.device.type in ("cpu", "cuda")}
        self.optimizers = {
            "encoder": torch.optim.Adam(self.encoder.parameters(), lr=c.lr, **adam),
            "decoder": torch.optim.Adam(self.decoder.parameters(), lr=c.lr, **adam),
        }
        if self.prior_parameters:
            self.optimizers["prior"] = torch.optim.Adam(self.prior_parameters, lr=c.prior_lr, **adam)

    @property
    def prior_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.prior.parameters() if p.requires_grad]

    @property
    def prior_learns_in_game(self) -> bool:
        return bool(self.prior_parameters) and self.config.prior_in_game

    def set_learning_rates(self, unit: int) -> None:
        """MultiStepLR's schedule at absolute unit `unit`: lr·0.1^(milestones passed), the same for all players."""
        factor = LR_DECAY ** bisect_right(self.config.lr_milestones, unit)
        for name, optimizer in self.optimizers.items():
            base = self.config.prior_lr if name == "prior" else self.config.lr
            for group in optimizer.param_groups:
                group["lr"] = base * factor

    def switch_to_mog(self) -> None:
        """VampPrior → free MoG with mu, logvar = E(u); all optimisers start anew."""
        assert isinstance(self.prior, VampPrior)
        self.prior = vamp_to_mog(self.prior, quirk_weights=self.config.protocol == "paper")
        self.is_mog_switched = True
        self._make_optimizers()

    def start_game(self) -> None:
        """First introspective unit: fix the clipping bounds (adaptive: the current range of the modes' logvar)."""
        c = self.config
        self.in_game = True
        if not c.clip_active:
            return
        if c.clip == "fixed":
            lo = torch.full((c.z_dim,), c.clip_logvar_min, device=self.device)
            hi = torch.full((c.z_dim,), c.clip_logvar_max, device=self.device)
        else:
            with torch.no_grad():
                logvar = self.prior.raw_components()[1]
            lo, hi = logvar.min(0).values, logvar.max(0).values
        self.prior.clip.set_bounds(lo, hi)

    def state_dict(self) -> dict:
        return {
            "encoder": self.encoder.state_dict(),
            "decoder": self.decoder.state_dict(),
            "prior": self.prior.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "is_mog_switched": self.is_mog_switched,
            "in_game": self.in_game,
        }

    def load_state_dict(self, state: dict) -> None:
        # switch first: the switch runs E(u), which moves BatchNorm statistics that the encoder's state then sets
        if state["is_mog_switched"] and not self.is_mog_switched:
            self.switch_to_mog()
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        self.prior.load_state_dict(state["prior"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.in_game = state["in_game"]

    # ----------------------------------------------------------------------------------------- terms
    def kl(
        self, mu: torch.Tensor, logvar: torch.Tensor, prior: Mixture, eps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-sample KL(q(z|x) ‖ p) (B,): analytic against N(0, I), else Monte Carlo over the samples ε."""
        return self.kl_and_mean_responsibility(mu, logvar, prior, eps, with_responsibility=False)[0]

    def kl_and_mean_responsibility(
        self,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        prior: Mixture,
        eps: torch.Tensor | None = None,
        with_responsibility: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The KL (B,) and the mean responsibility r̄ (K,) of its MC samples, from one pass over their densities
        (r̄ is None for the analytic KL or when not asked for)."""
        if self.config.kl_estimator == "analytic":
            return kl_standard_normal(mu, logvar), None
        if eps is None:
            eps = self._normal(mu.shape[0], self.config.mc_samples, mu.shape[1], like=mu)
        return kl_and_mean_responsibility(mu, logvar, prior, eps, with_responsibility)

    @property
    def regularizer_on(self) -> bool:
        return self.config.responsibility_weight > 0 and self.prior.num_components > 1

    # ----------------------------------------------------------------------------------------- randomness
    @staticmethod
    def _normal(*shape: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def _kl_noise(self, n: int, like: torch.Tensor) -> torch.Tensor | None:
        if self.config.kl_estimator == "analytic":
            return None
        return self._normal(n, self.config.mc_samples, self.config.z_dim, like=like)

    def draw_warmup_noise(self, x: torch.Tensor) -> WarmupNoise:
        b = x.shape[0]
        return WarmupNoise(self._normal(b, self.config.z_dim, like=x), self._kl_noise(b, x))

    def draw_encoder_noise(self, x: torch.Tensor) -> EncoderNoise:
        b, z_dim = x.shape[0], self.config.z_dim
        z = self._normal(b, z_dim, like=x)
        kl_real = self._kl_noise(b, x)
        fresh = self.regularizer_on and (kl_real is None or self.config.fresh_regularizer_samples)
        regularizer = self._normal(b, self.config.mc_samples, z_dim, like=x) if fresh else None
        prior = self.prior.sample_noise(b, dtype=x.dtype)
        z_fake_rec = self._normal(2 * b, z_dim, like=x)
        return EncoderNoise(z, kl_real, regularizer, prior, z_fake_rec, self._kl_noise(2 * b, x))

    def draw_decoder_noise(self, x: torch.Tensor) -> DecoderNoise:
        b = x.shape[0]
        prior = self.prior.sample_noise(b, dtype=x.dtype)
        z_rec_fake = self._normal(2 * b, self.config.z_dim, like=x)
        return DecoderNoise(prior, z_rec_fake, self._kl_noise(2 * b, x), self._kl_noise(b, x))

    # ----------------------------------------------------------------------------------------- passes
    def _encode(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """E over `parts` stacked batches: one pass when the nets allow it (no BatchNorm), else one pass each."""
        if self.batch_passes or parts == 1:
            return self.encoder(x)
        mus, logvars = zip(*(self.encoder(chunk) for chunk in x.chunk(parts)))
        return torch.cat(mus), torch.cat(logvars)

    def _decode(self, z: torch.Tensor, parts: int) -> torch.Tensor:
        if self.batch_passes or parts == 1:
            return self.decoder(z)
        return torch.cat([self.decoder(chunk) for chunk in z.chunk(parts)])

    def _decoder_versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.decoder.parameters())

    def _reconstruct_for_decoder(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = D(z.detach()): the encoder step's D(z) when D has not changed since (its graph reaches D's
        parameters the same way), else a fresh pass."""
        cached, self._reconstruction = self._reconstruction, None
        if cached is not None and cached[0] is z and cached[2] == self._decoder_versions():
            return cached[1]
        return self.decoder(z.detach())

    def _fakes_for_encoder(self, prior: Mixture, noise: tuple[torch.Tensor, torch.Tensor], with_grad: bool):
        """x_f = D(z_p) for the encoder step: a graph to ψ only when the prior steps with the encoder (the paper's
        prior_with_encoder draws its fakes with gradient); the decoder does not step here either way."""
        if with_grad:
            return self.decoder(prior.draw(*noise))
        with torch.no_grad():
            return self.decoder(prior.detach().draw(*noise))

    def _elbo_terms_for_encoder(
        self, x_fake: torch.Tensor, x_hat: torch.Tensor, target: Mixture, noise: EncoderNoise
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """rec and KL of x_f and x̂ as the encoder sees them: E takes the detached images, the reconstruction
        targets keep their graphs (x̂ = D(z(φ)) reaches the encoder; with prior_with_encoder x_f reaches ψ).
        Both batches in one stacked pass where the nets allow. Returns rec_f, kl_f, rec_r, kl_r (each (B,))."""
        x_fr = torch.cat([x_fake, x_hat])
        mu, logvar = self._encode(x_fr.detach(), parts=2)
        z = reparameterize(mu, logvar, noise.z_fake_rec)
        rec_f, rec_r = reconstruction_error(x_fr, self._decode(z, parts=2)).chunk(2)
        kl_f, kl_r = self.kl(mu, logvar, target, noise.kl_fake_rec).chunk(2)
        return rec_f, kl_f, rec_r, kl_r

    def _elbo_terms_for_decoder(
        self, x_hat: torch.Tensor, x_fake: torch.Tensor, target: Mixture, noise: DecoderNoise
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """rec and KL of x̂ and x_f as the decoder sees them: gradients flow through the (frozen) encoder into the
        images; rec re-decodes the detached latents against detached targets, and is skipped (zero) when γ_r = 0.
        Both batches in one stacked pass where the nets allow. Returns rec_r, kl_r, rec_f, kl_f."""
        x_rf = torch.cat([x_hat, x_fake])
        mu, logvar = self._encode(x_rf, parts=2)
        z = reparameterize(mu, logvar, noise.z_rec_fake)
        if self.config.gamma_r > 0:
            rec_r, rec_f = reconstruction_error(x_rf.detach(), self._decode(z.detach(), parts=2)).chunk(2)
        else:
            rec_r = rec_f = torch.zeros((), dtype=x_rf.dtype, device=x_rf.device)
        kl_r, kl_f = self.kl(mu, logvar, target, noise.kl_rec_fake).chunk(2)
        return rec_r, kl_r, rec_f, kl_f

    def _step(self, loss: torch.Tensor, players: list[str], retain_graph: bool = False) -> None:
        """Gradients of `loss` for the named players only, then their optimiser steps."""
        modules = {"encoder": self.encoder, "decoder": self.decoder, "prior": self.prior}
        params = [p for name in players for p in modules[name].parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=retain_graph)
        for p, g in zip(params, grads):
            p.grad = g
        for name in players:
            self.optimizers[name].step()

    # ===================================================================================== warm-up (all players)
    def warmup_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """β-VAE: β_rec·mean rec + β_kl·mean KL (no scale); encoder, decoder and prior step together."""
        c = self.config
        noise = self.draw_warmup_noise(x)
        prior = self.prior.mixture(with_grad=True)
        mu, logvar = self.encoder(x)
        x_hat = self.decoder(reparameterize(mu, logvar, noise.z))
        rec = reconstruction_error(x, x_hat).mean()
        kl = self.kl(mu, logvar, prior, noise.kl).mean()
        loss = c.beta_rec * rec + c.beta_kl * kl
        self._step(loss, list(self.optimizers))
        loss = loss.detach()
        return {"loss_encoder": loss, "loss_decoder": loss, "rec": rec.detach(), "kl_real": kl.detach()}

    # ===================================================================================== encoder (φ)
    def encoder_step(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Encoder: maximise the ELBO of real data, push down exp(α·ELBO) of reconstructions and prior samples."""
        c, scale = self.config, self.task.scale
        noise = self.draw_encoder_noise(x)
        prior_steps_here = c.prior_with_encoder and self.prior_learns_in_game
        prior = self.prior.mixture(with_grad=prior_steps_here)
        shares_samples = self.regularizer_on and noise.regularizer is None  # images: R on the KL's samples

        # real data                                                         z ~ q(z|x), x̂ = D(z)
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar, noise.z)
        x_hat = self.decoder(z)
        rec = reconstruction_error(x, x_hat)  #                              rec(x, x̂) = ‖x − x̂‖²
        kl_real, r_bar = self.kl_and_mean_responsibility(  #                 KL(q(z|x) ‖ p_ψ), r̄ of its samples
            mu, logvar, prior, noise.kl_real, with_responsibility=shares_samples
        )
        loss_real = scale * (c.beta_kl * kl_real.mean() + c.beta_rec * rec.mean())  # scale·(β_kl·KL + β_rec·rec)

        # generated data                                                    x_f = D(z_p), z_p ~ p_ψ; and x̂
        x_fake = self._fakes_for_encoder(prior, noise.prior, with_grad=prior_steps_here)
        rec_f, kl_f, rec_r, kl_r = self._elbo_terms_for_encoder(x_fake, x_hat, prior.detach(), noise)
        # exp_elbo = mean exp(−α·scale·(β_rec·rec + β_neg·KL)), of x_f and of x̂
        exp_elbo_f = exp_elbo(rec_f, kl_f, c.alpha, scale, c.beta_rec, c.beta_neg)
        exp_elbo_r = exp_elbo(rec_r, kl_r, c.alpha, scale, c.beta_rec, c.beta_neg)
        loss_fake = (1 / c.alpha) * (exp_elbo_f + exp_elbo_r) / 2  #          (1/α)·½·(exp_elbo_f + exp_elbo_r)

        # every mode in use                                                 R = Σ_k r̄_k·log r̄_k (/ log K)
        loss = loss_real + loss_fake
        if self.regularizer_on:
            if not shares_samples:  # 2D: a fresh set of M samples per point
                r_bar = self.kl_and_mean_responsibility(mu, logvar, prior, noise.regularizer)[1]
            loss = loss + scale * c.responsibility_weight * aggregate_negative_entropy(r_bar)  # + scale·λ·R

        self._step(loss, ["encoder", "prior"] if prior_steps_here else ["encoder"], retain_graph=True)
        z = z.detach()
        self._reconstruction = (z, x_hat, self._decoder_versions())  # the decoder step's x̂ (see its helper)
        logs = {
            "loss_encoder": loss.detach(),
            "rec": rec.mean().detach(),
            "kl_real": kl_real.mean().detach(),
            "kl_fake": kl_f.mean().detach(),
        }
        return logs, (z, mu.detach(), logvar.detach())

    # ===================================================================================== decoder (θ) and prior (ψ)
    def decoder_step(self, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
        """Decoder (+ prior): maximise the ELBO of real data and of its own samples; the prior learns from KL_real
        and, through its samples z_p → x_f → E, from the fakes' ELBO. `mu, logvar, z` come from the encoder step."""
        c, scale = self.config, self.task.scale
        noise = self.draw_decoder_noise(x)
        prior_steps_here = self.prior_learns_in_game and not c.prior_with_encoder
        prior = self.prior.mixture(with_grad=prior_steps_here)

        # real data and its own samples                                     x_f = D(z_p), z_p ~ p_ψ; x̂ = D(z.detach())
        x_fake = self.decoder(prior.draw(*noise.prior))
        x_hat = self._reconstruct_for_decoder(z)
        rec = reconstruction_error(x, x_hat).mean()  #                       mean rec(x, x̂)
        kl_real = self.kl(mu, logvar, prior, noise.kl_real).mean()  #        mean KL(q(z|x) ‖ p_ψ), ψ's gradient
        rec_r, kl_r, rec_f, kl_f = self._elbo_terms_for_decoder(x_hat, x_fake, prior.detach(), noise)

        loss = scale * (
            c.beta_rec * rec  #                                               β_rec·rec(x, x̂)
            + c.beta_kl * kl_real  #                                          β_kl·KL(x)
            + c.beta_kl * (kl_r.mean() + kl_f.mean()) / 2  #                  β_kl·½·(KL(x̂) + KL(x_f))
            + c.gamma_r * c.beta_rec * (rec_r.mean() + rec_f.mean()) / 2  #   γ_r·β_rec·½·(rec(x̂) + rec(x_f))
        )
        self._step(loss, ["decoder", "prior"] if prior_steps_here else ["decoder"])
        return {"loss_decoder": loss.detach()}

    def game_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logs, (z, mu, logvar) = self.encoder_step(x)
        logs.update(self.decoder_step(x, z, mu, logvar))
        return logs
