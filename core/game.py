"""The three-player game: encoder, decoder and a learnable prior, and their updates (shared/DESIGN.md §1).

`warmup_step` is the β-VAE phase; `encoder_step` and `decoder_step` are the Soft-IntroVAE updates with the prior
cooperating with the decoder (or with the encoder, `prior_with_encoder`). Each step reads like the paper's
algorithm box, one line a term. Each player's update takes only its own gradients (`torch.autograd.grad` on its
parameters), so a frozen player is never touched. The steps return detached loss tensors: no host sync inside.
"""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch import nn

from core.config import TrainConfig
from core.losses import (
    exp_elbo,
    kl_monte_carlo,
    kl_standard_normal,
    mixture_terms,
    posterior_samples,
    reconstruction_error,
    reparameterize,
    responsibility_regularizer,
)
from core.priors import Mixture, Prior, VampPrior, build_prior, vamp_to_mog

LR_DECAY = 0.1


class Game:
    """Players, optimisers and the update rules; `state_dict` captures everything needed to resume."""

    def __init__(self, config: TrainConfig, task, device: torch.device):
        self.config = config
        self.task = task
        self.device = device
        self.encoder, self.decoder = (net.to(device) for net in task.make_nets(config))
        self.prior: Prior = build_prior(config, self.encoder, task.init_data, image=config.is_image).to(device)
        self.is_mog_switched = False
        self.in_game = False
        self._make_optimizers()

    # ----------------------------------------------------------------------------------------- bookkeeping
    def _make_optimizers(self) -> None:
        """Fresh Adam optimisers (fresh moments): at start and again when the VampPrior becomes a MoG."""
        c = self.config
        self.optimizers = {
            "encoder": torch.optim.Adam(self.encoder.parameters(), lr=c.lr, betas=(0.9, 0.999)),
            "decoder": torch.optim.Adam(self.decoder.parameters(), lr=c.lr, betas=(0.9, 0.999)),
        }
        if self.prior_parameters:
            self.optimizers["prior"] = torch.optim.Adam(self.prior_parameters, lr=c.prior_lr, betas=(0.9, 0.999))

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
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        if state["is_mog_switched"] and not self.is_mog_switched:
            self.switch_to_mog()
        self.prior.load_state_dict(state["prior"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.in_game = state["in_game"]

    # ----------------------------------------------------------------------------------------- terms
    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, prior: Mixture) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample KL(q(z|x) ‖ p) and, for the MC estimate, the samples' responsibilities (B·M, K)."""
        if self.config.kl_estimator == "analytic":
            return kl_standard_normal(mu, logvar), None
        z, log_q = posterior_samples(mu, logvar, self.config.mc_samples)
        log_p, responsibilities = mixture_terms(z, prior)
        return (log_q - log_p).mean(1), responsibilities

    def regularizer(self, mu: torch.Tensor, logvar: torch.Tensor, prior: Mixture, kl_responsibilities):
        """R over z ~ q(z|x) of the real batch: 2D draws a fresh set of M samples, images reuse the KL's."""
        if kl_responsibilities is None or self.task.fresh_regularizer_samples:
            z, _ = posterior_samples(mu, logvar, self.config.mc_samples)
            _, kl_responsibilities = mixture_terms(z, prior)
        return responsibility_regularizer(kl_responsibilities)

    def _step(self, loss: torch.Tensor, players: list[str]) -> None:
        """Gradients of `loss` for the named players only, then their optimiser steps."""
        modules = {"encoder": self.encoder, "decoder": self.decoder, "prior": self.prior}
        params = [p for name in players for p in modules[name].parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        for name in players:
            self.optimizers[name].step()

    # ----------------------------------------------------------------------------------------- updates
    def warmup_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """β-VAE: β_rec·mean rec + β_kl·mean KL (no scale); encoder, decoder and prior step together."""
        c = self.config
        prior = self.prior.mixture(with_grad=True)
        mu, logvar = self.encoder(x)
        x_hat = self.decoder(reparameterize(mu, logvar))
        rec = reconstruction_error(x, x_hat).mean()
        kl, _ = self.kl(mu, logvar, prior)
        kl = kl.mean()
        loss = c.beta_rec * rec + c.beta_kl * kl
        self._step(loss, [name for name in self.optimizers])
        loss = loss.detach()
        return {"loss_encoder": loss, "loss_decoder": loss, "rec": rec.detach(), "kl_real": kl.detach()}

    def encoder_step(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Encoder: maximise the ELBO of real data, push down exp(α·ELBO) of reconstructions and prior samples."""
        c, scale = self.config, self.task.scale
        prior_steps_here = c.prior_with_encoder and self.prior_learns_in_game
        prior = self.prior.mixture(with_grad=prior_steps_here)
        target = prior.detach()

        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar)
        x_hat = self.decoder(z)
        rec = reconstruction_error(x, x_hat)
        kl_real, responsibilities = self.kl(mu, logvar, prior)
        loss_real = scale * (c.beta_kl * kl_real.mean() + c.beta_rec * rec.mean())

        with torch.no_grad():
            x_fake = self.decoder(self.prior.sample(x.shape[0]))
        mu_f, logvar_f = self.encoder(x_fake)
        rec_f = reconstruction_error(x_fake, self.decoder(reparameterize(mu_f, logvar_f)))
        kl_f, _ = self.kl(mu_f, logvar_f, target)
        mu_r, logvar_r = self.encoder(x_hat.detach())
        rec_r = reconstruction_error(x_hat.detach(), self.decoder(reparameterize(mu_r, logvar_r)))
        kl_r, _ = self.kl(mu_r, logvar_r, target)
        exp_elbo_f = exp_elbo(rec_f, kl_f, c.alpha, scale, c.beta_rec, c.beta_neg)
        exp_elbo_r = exp_elbo(rec_r, kl_r, c.alpha, scale, c.beta_rec, c.beta_neg)
        loss_fake = (1 / c.alpha) * (exp_elbo_f + exp_elbo_r) / 2

        loss = loss_real + loss_fake
        if c.responsibility_weight > 0 and self.prior.num_components > 1:
            loss = loss + scale * c.responsibility_weight * self.regularizer(mu, logvar, prior, responsibilities)
        self._step(loss, ["encoder", "prior"] if prior_steps_here else ["encoder"])
        logs = {"loss_encoder": loss.detach(), "rec": rec.mean().detach(), "kl_real": kl_real.mean().detach(),
                "kl_fake": kl_f.mean().detach()}
        return logs, (z.detach(), mu.detach(), logvar.detach())

    def decoder_step(self, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
        """Decoder (+ prior): maximise the ELBO of real data and of its own samples; the prior learns from KL_real
        and, through its samples z_p → x_f → E, from the fakes' ELBO. `mu, logvar, z` come from the encoder step."""
        c, scale = self.config, self.task.scale
        prior_steps_here = self.prior_learns_in_game and not c.prior_with_encoder
        z_p = self.prior.sample(x.shape[0], with_grad=prior_steps_here)
        x_fake = self.decoder(z_p)
        x_hat = self.decoder(z)
        rec = reconstruction_error(x, x_hat).mean()

        mu_r, logvar_r = self.encoder(x_hat)
        mu_f, logvar_f = self.encoder(x_fake)
        z_r, z_f = reparameterize(mu_r, logvar_r), reparameterize(mu_f, logvar_f)
        rec_r = reconstruction_error(x_hat.detach(), self.decoder(z_r.detach())).mean()
        rec_f = reconstruction_error(x_fake.detach(), self.decoder(z_f.detach())).mean()
        target = self.prior.mixture(with_grad=False)
        kl_r = self.kl(mu_r, logvar_r, target)[0].mean()
        kl_f = self.kl(mu_f, logvar_f, target)[0].mean()
        kl_real = self.kl(mu, logvar, self.prior.mixture(with_grad=prior_steps_here))[0].mean()

        loss = scale * (
            c.beta_rec * rec
            + c.beta_kl * kl_real
            + c.beta_kl * (kl_r + kl_f) / 2
            + c.gamma_r * c.beta_rec * (rec_r + rec_f) / 2
        )
        self._step(loss, ["decoder", "prior"] if prior_steps_here else ["decoder"])
        return {"loss_decoder": loss.detach()}

    def game_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logs, (z, mu, logvar) = self.encoder_step(x)
        logs.update(self.decoder_step(x, z, mu, logvar))
        return logs
