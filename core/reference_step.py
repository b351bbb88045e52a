"""The literal game step: every term of docs/method.md §1 computed as it is written. Tests and benchmarks only.

The oracle for `core.game.Game`: the per-component log-densities are materialised as a (K, B·M, z) tensor and
reduced, as the paper's code does; log q(z|x) is the Gaussian evaluated at z; every forward is recomputed (the
decoder step decodes z.detach() again, encodes x̂ and x_f in separate passes); nothing is batched, shared or
skipped. `ReferenceGame` draws its randomness with `Game`'s own `draw_*_noise`, in the same order, so from the same
parameters, RNG state and batch both compute the same losses and gradients (tests/test_fast_step.py), and
benchmarks/step_2d.py times one against the other.
"""

from __future__ import annotations

import torch

from core.game import Game
from core.losses import exp_elbo, kl_standard_normal, reconstruction_error, responsibility_regularizer
from core.mixture import LOG_2PI
from core.priors import Mixture


def per_dimension_log_densities(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z_nd; μ_kd, σ²_kd) for every component k, point n and dimension d: (N, z), (K, z) -> (K, N, z)."""
    mu, logvar = mu.unsqueeze(1), logvar.unsqueeze(1)
    return -0.5 * (LOG_2PI + logvar + (z.unsqueeze(0) - mu) ** 2 / torch.exp(logvar))


def literal_kl(
    mu: torch.Tensor, logvar: torch.Tensor, prior: Mixture, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL ≈ mean over z_m = mu + ε_m·σ of [log q(z_m|x) − log Σ_k w_k·N(z_m; μ_k, σ²_k)], per sample (B,), and the
    joint log-densities log w_k + log N(z; μ_k, σ²_k) of all B·M samples (K, B·M), whose softmax over k is the
    responsibilities (`responsibilities`; computed only where a term uses them)."""
    b, m, d = eps.shape
    mu_, logvar_ = mu.unsqueeze(1), logvar.unsqueeze(1)
    z = mu_ + eps * torch.exp(0.5 * logvar_)
    log_q = (-0.5 * (LOG_2PI + logvar_ + (z - mu_) ** 2 / torch.exp(logvar_))).sum(-1)  # q at its own samples
    joint = per_dimension_log_densities(z.reshape(b * m, d), prior.mu, prior.logvar).sum(-1) + prior.log_w[:, None]
    log_p = torch.logsumexp(joint, dim=0).reshape(b, m)
    return (log_q - log_p).mean(1), joint


def responsibilities(joint: torch.Tensor) -> torch.Tensor:
    """r_k(z) = w_k·N(z; μ_k, σ²_k) / Σ_j w_j·N(z; μ_j, σ²_j) from the joint log-densities (K, N) -> (N, K)."""
    return torch.softmax(joint, dim=0).T


class ReferenceGame(Game):
    """`Game` with the literal steps: same players, optimisers, schedule and randomness. The warm-up step is
    `Game`'s own (one encoder, one decoder pass: nothing there to share or batch) with the literal KL."""

    def kl(self, mu, logvar, prior: Mixture, eps=None) -> torch.Tensor:
        """The literal KL (B,); the warm-up step, `Game`'s own, computes with it."""
        return self.kl_and_joint(mu, logvar, prior, eps)[0]

    def kl_and_joint(self, mu, logvar, prior: Mixture, eps=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The literal KL and its samples' joint log-densities (K, B·M), the regulariser's input (None when
        analytic)."""
        if self.config.kl_estimator == "analytic":
            return kl_standard_normal(mu, logvar), None
        if eps is None:
            eps = self._normal(mu.shape[0], self.config.mc_samples, mu.shape[1], like=mu)
        return literal_kl(mu, logvar, prior, eps)

    def encoder_step(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        c, scale = self.config, self.task.scale
        noise = self.draw_encoder_noise(x)
        b = x.shape[0]
        prior_steps_here = c.prior_with_encoder and self.prior_learns_in_game

        # lossE_real = scale·(β_kl·mean KL(x) + β_rec·mean rec(x, x̂)), x̂ = D(z), z ~ q(z|x)
        mu, logvar = self.encoder(x)
        z = mu + noise.z * torch.exp(0.5 * logvar)
        x_hat = self.decoder(z)
        rec = reconstruction_error(x, x_hat)
        kl_real, joint = self.kl_and_joint(mu, logvar, self.prior.mixture(with_grad=prior_steps_here), noise.kl_real)
        loss_real = scale * (c.beta_kl * kl_real.mean() + c.beta_rec * rec.mean())

        # x_f = D(z_p), z_p ~ p (with gradient to ψ when the prior steps here); encode x_f.detach() and x̂.detach(),
        # reparameterise, decode; the targets x_f and x̂ keep their graphs (x̂ = D(z(φ)) reaches the encoder)
        x_fake = self.decoder(self.prior.sample(b, with_grad=prior_steps_here, noise=noise.prior))
        eps_f, eps_r = noise.z_fake_rec[:b], noise.z_fake_rec[b:]
        mc_f, mc_r = (None, None) if noise.kl_fake_rec is None else (noise.kl_fake_rec[:b], noise.kl_fake_rec[b:])
        mu_f, logvar_f = self.encoder(x_fake.detach())
        rec_f = reconstruction_error(x_fake, self.decoder(mu_f + eps_f * torch.exp(0.5 * logvar_f)))
        kl_f = self.kl(mu_f, logvar_f, self.prior.mixture(with_grad=False), mc_f)
        mu_r, logvar_r = self.encoder(x_hat.detach())
        rec_r = reconstruction_error(x_hat, self.decoder(mu_r + eps_r * torch.exp(0.5 * logvar_r)))
        kl_r = self.kl(mu_r, logvar_r, self.prior.mixture(with_grad=False), mc_r)

        # lossE_fake = (1/α)·(mean exp(−α·scale·(β_rec·rec_f + β_neg·KL_f)) + the same for x̂)/2
        exp_elbo_f = exp_elbo(rec_f, kl_f, c.alpha, scale, c.beta_rec, c.beta_neg)
        exp_elbo_r = exp_elbo(rec_r, kl_r, c.alpha, scale, c.beta_rec, c.beta_neg)
        loss_fake = (1 / c.alpha) * (exp_elbo_f + exp_elbo_r) / 2

        # lossE = lossE_real + lossE_fake + scale·λ·R
        loss = loss_real + loss_fake
        if self.regularizer_on:
            if noise.regularizer is not None:
                prior = self.prior.mixture(with_grad=prior_steps_here)
                _, joint = self.kl_and_joint(mu, logvar, prior, noise.regularizer)
            loss = loss + scale * c.responsibility_weight * responsibility_regularizer(responsibilities(joint))
        self._step(loss, ["encoder", "prior"] if prior_steps_here else ["encoder"])
        logs = {
            "loss_encoder": loss.detach(),
            "rec": rec.mean().detach(),
            "kl_real": kl_real.mean().detach(),
            "kl_fake": kl_f.mean().detach(),
        }
        return logs, (z.detach(), mu.detach(), logvar.detach())

    def decoder_step(self, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
        c, scale = self.config, self.task.scale
        noise = self.draw_decoder_noise(x)
        b = x.shape[0]
        prior_steps_here = self.prior_learns_in_game and not c.prior_with_encoder

        # x_f = D(z_p), z_p ~ p_ψ with gradient to ψ; x̂ = D(z.detach()); rec_loss = mean rec(x, x̂)
        x_fake = self.decoder(self.prior.sample(b, with_grad=prior_steps_here, noise=noise.prior))
        x_hat = self.decoder(z.detach())
        rec = reconstruction_error(x, x_hat).mean()

        # encode x̂ and x_f (gradients flow through the frozen encoder), reparameterise, decode the detached latents
        eps_r, eps_f = noise.z_rec_fake[:b], noise.z_rec_fake[b:]
        mc_r, mc_f = (None, None) if noise.kl_rec_fake is None else (noise.kl_rec_fake[:b], noise.kl_rec_fake[b:])
        mu_r, logvar_r = self.encoder(x_hat)
        mu_f, logvar_f = self.encoder(x_fake)
        z_r = mu_r + eps_r * torch.exp(0.5 * logvar_r)
        z_f = mu_f + eps_f * torch.exp(0.5 * logvar_f)
        rec_r = reconstruction_error(x_hat.detach(), self.decoder(z_r.detach())).mean()
        rec_f = reconstruction_error(x_fake.detach(), self.decoder(z_f.detach())).mean()

        # KL_r, KL_f against the detached prior; KL_real of the detached encoder outputs against the prior
        kl_r = self.kl(mu_r, logvar_r, self.prior.mixture(with_grad=False), mc_r).mean()
        kl_f = self.kl(mu_f, logvar_f, self.prior.mixture(with_grad=False), mc_f).mean()
        prior = self.prior.mixture(with_grad=prior_steps_here)
        kl_real = self.kl(mu.detach(), logvar.detach(), prior, noise.kl_real).mean()

        # lossD = scale·(β_rec·rec + β_kl·KL_real + γ·β_kl·(KL_r + KL_f)/2 + γ·γ_r·β_rec·(rec_r + rec_f)/2), γ = 1
        loss = scale * (
            c.beta_rec * rec
            + c.beta_kl * kl_real
            + c.beta_kl * (kl_r + kl_f) / 2
            + c.gamma_r * c.beta_rec * (rec_r + rec_f) / 2
        )
        self._step(loss, ["decoder", "prior"] if prior_steps_here else ["decoder"])
        return {"loss_decoder": loss.detach()}
