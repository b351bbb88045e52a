"""Log-densities of a diagonal Gaussian mixture, computed as a quadratic form (no (K, N, z) tensor).

Σ_d log N(z_d; μ_kd, σ²_kd) = −½·Σ_d [log 2π + log σ²_kd + z_d²/σ²_kd − 2·z_d·μ_kd/σ²_kd + μ²_kd/σ²_kd]:
two (N, z) × (z, K) matmuls and a (K,) vector, then one logsumexp over K (shared/DESIGN.md §5).
"""

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def component_log_densities(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z_n; μ_k, diag σ²_k) for every point n and component k: (N, z), (K, z), (K, z) -> (N, K)."""
    precision = torch.exp(-logvar)
    quadratic = (z * z) @ precision.T - 2 * z @ (mu * precision).T + (mu * mu * precision).sum(1)
    return -0.5 * (quadratic + logvar.sum(1) + z.shape[-1] * LOG_2PI)


def mixture_logits(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    """log w_k + log N(z_n; μ_k, σ²_k), shape (N, K): logsumexp over K is log p(z), softmax the responsibilities."""
    return component_log_densities(z, mu, logvar) + log_w


def diagonal_gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag σ²) summed over the last dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)
