"""The loss terms of the game as pure functions, each formula in its docstring (docs/method.md §1)."""

import math

import torch

from core.mixture import LOG_2PI, mixture_log_prob, mixture_logits
from core.priors import Mixture


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error summed over all non-batch dimensions: rec(x, x̂) = Σ_d (x_d − x̂_d)², shape (B,)."""
    return (x - x_hat).pow(2).flatten(1).sum(1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + ε·exp(½·logvar), ε ~ N(0, I) (drawn here unless given)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + eps * torch.exp(0.5 * logvar)


def posterior_samples(
    mu: torch.Tensor, logvar: torch.Tensor, num_samples: int, eps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """M reparameterised samples per posterior and their log q(z|x): z (B, M, z), log q (B, M).

    log q(z|x) = −½·Σ_d (log 2π + logvar_d + ε_d²): the same value and gradient as evaluating the Gaussian at
    z = mu + ε·σ, without recomputing (z − mu)/σ. ε (B, M, z) is drawn here unless given.
    """
    if eps is None:
        eps = torch.randn(mu.shape[0], num_samples, mu.shape[1], device=mu.device, dtype=mu.dtype)
    z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)
    log_q = -0.5 * (LOG_2PI + logvar.unsqueeze(1) + eps * eps).sum(-1)
    return z, log_q


def mixture_terms(z: torch.Tensor, prior: Mixture) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(z) = logsumexp_k(log w_k + log N(z; μ_k, σ²_k)) and responsibilities r_k(z), for z of shape (..., z)."""
    logits = mixture_logits(z.reshape(-1, z.shape[-1]), *prior)
    log_p = torch.logsumexp(logits, dim=1)
    return log_p.reshape(z.shape[:-1]), torch.softmax(logits, dim=1)


def kl_and_mean_responsibility(
    mu: torch.Tensor, logvar: torch.Tensor, prior: Mixture, eps: torch.Tensor, mean_responsibility: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Monte-Carlo KL(q(z|x) ‖ p) per sample (B,) on z = mu + ε·σ (ε (B, M, z)), and the mean responsibility
    r̄_k = mean over the B·M samples of r_k(z) (K,) (None unless `mean_responsibility`), both from one pass over the
    (B·M, K) log-densities.

    KL = mean_m [log q(z_m|x) − log p(z_m)] with mean_m log q(z_m|x) = −½·(z·log 2π + Σ_d logvar_d + mean_m ‖ε_m‖²),
    the same value and gradient as `posterior_samples`' per-sample log q, summed in an order that is cheaper.
    """
    b, m, d = eps.shape
    z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)
    log_p, r_bar = mixture_log_prob(z.reshape(b * m, d), *prior, mean_responsibility=mean_responsibility)
    mean_log_q = -0.5 * (d * LOG_2PI + logvar.sum(1) + eps.square().sum((1, 2)) / m)
    return mean_log_q - log_p.reshape(b, m).mean(1), r_bar


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic per-sample KL(N(mu, σ²) ‖ N(0, I)) = ½·Σ_d (σ²_d + mu_d² − 1 − logvar_d), shape (B,)."""
    return 0.5 * (logvar.exp() + mu * mu - 1 - logvar).sum(1)


def responsibility_regularizer(responsibilities: torch.Tensor) -> torch.Tensor:
    """R = Σ_k r̄_k·log(r̄_k + 1e-8), r̄ = mean responsibility over samples, divided by log K when log K > 1.

    The negative entropy of the aggregate responsibility: −1 (normalised) when every mode is used equally, 0 when
    one mode takes everything; minimising it keeps every mode in use (M4).
    """
    return aggregate_negative_entropy(responsibilities.mean(0))


def aggregate_negative_entropy(r_bar: torch.Tensor) -> torch.Tensor:
    """R from the mean responsibility r̄ (K,): Σ_k r̄_k·log(r̄_k + 1e-8), divided by log K when log K > 1."""
    negative_entropy = (r_bar * torch.log(r_bar + 1e-8)).sum()
    log_k = math.log(r_bar.shape[0])
    return negative_entropy / log_k if log_k > 1 else negative_entropy


def exp_elbo(rec: torch.Tensor, kl: torch.Tensor, alpha: float, scale: float, beta_rec: float, beta_neg: float):
    """mean(exp(−α·scale·(β_rec·rec + β_neg·KL))): the encoder's soft penalty on the ELBO of generated samples."""
    return torch.exp(-alpha * scale * (beta_rec * rec + beta_neg * kl)).mean()
