"""Log-densities of a diagonal Gaussian mixture, computed as a quadratic form (no (K, N, z) tensor).

Σ_d log N(z_d; μ_kd, σ²_kd) = −½·Σ_d [log 2π + log σ²_kd + z_d²/σ²_kd − 2·z_d·μ_kd/σ²_kd + μ²_kd/σ²_kd]:
one (N, 2z) × (2z, K) matmul and a (K,) vector, then one logsumexp over K (shared/DESIGN.md §5).

`mixture_log_prob` is the form the game differentiates: a custom autograd function that returns log p(z) and the
mean responsibility r̄ and whose backward is written from the responsibilities (∂ logsumexp = softmax), with the
parameter gradients as matmuls, so that the (N, K) matrix is written once and read three times a call.
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


def mixture_log_prob(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(z_n) = logsumexp_k ℓ_nk and r̄_k = (1/N)·Σ_n r_nk, r_nk = softmax_k ℓ_nk, both differentiable.

    ℓ_nk = log w_k + log N(z_n; μ_k, diag σ²_k); z (N, z), mu and logvar (K, z), log_w (K,) -> (N,), (K,).
    Equal in value and gradient to `torch.logsumexp(mixture_logits(...), 1)` and `softmax(...).mean(0)`.
    """
    return _MixtureLogProb.apply(z, mu, logvar, log_w)


class _MixtureLogProb(torch.autograd.Function):
    """Forward: ℓ = [z², z]·[−½σ⁻², μσ⁻²]ᵀ + c (one addmm), r = softmax ℓ (one fused pass), log p = max ℓ − log max r
    (exact: the largest responsibility is 1/Σ_k exp(ℓ_k − max ℓ)), r̄ = mean r.

    Backward with upstream a_n = ∂/∂log p_n and b_k = ∂/∂r̄_k: ∂/∂ℓ_nk = G_nk = r_nk·(a_n − (r·b)_n/N + b_k/N).
    With Y = [μσ⁻², σ⁻²] and X = [z, z², 1], everything needed is G·Y (for z) and Gᵀ·X (for μ, log σ², log w):
      ∂z = (G·Y)[:, :z] − z ⊙ (G·Y)[:, z:],   ∂log w = s,   ∂μ = σ⁻² ⊙ (Gᵀz − μ·s),
      ∂log σ² = ½·σ⁻² ⊙ (Gᵀz² − 2μ ⊙ Gᵀz + μ²·s) − ½·s,   s = Gᵀ1,
    and since G is r scaled by a row vector plus a column vector, both are matmuls of r itself with skinny
    matrices: G is never formed.
    """

    @staticmethod
    def forward(ctx, z, mu, logvar, log_w):
        n, d = z.shape
        precision = torch.exp(-logvar)
        weights = torch.cat([-0.5 * precision, mu * precision], dim=1)  # (K, 2d)
        bias = log_w - 0.5 * ((mu * mu * precision).sum(1) + logvar.sum(1) + d * LOG_2PI)
        logits = torch.addmm(bias, torch.cat([z * z, z], dim=1), weights.T)  # (N, K)
        responsibilities = torch.softmax(logits, dim=1)
        log_p = logits.amax(1) - torch.log(responsibilities.amax(1))
        del logits
        ctx.save_for_backward(z, mu, precision, responsibilities)
        ctx.set_materialize_grads(False)
        return log_p, responsibilities.mean(0)

    @staticmethod
    def backward(ctx, grad_log_p, grad_r_bar):
        z, mu, precision, r = ctx.saved_tensors
        n, d = z.shape
        need_z = ctx.needs_input_grad[0]
        need_params = any(ctx.needs_input_grad[1:])
        a = grad_log_p if grad_log_p is not None else z.new_zeros(n)
        y = torch.cat([mu * precision, precision], dim=1)  # (K, 2d)
        if grad_r_bar is not None:
            b = grad_r_bar / n
            ry = r @ torch.cat([y, b.unsqueeze(1) * y, b.unsqueeze(1)], dim=1)  # (N, 4d + 1)
            a = a - ry[:, -1]
            gy = a.unsqueeze(1) * ry[:, : 2 * d] + ry[:, 2 * d : 4 * d] if need_z else None
        else:
            b = None
            gy = a.unsqueeze(1) * (r @ y) if need_z else None
        grad_z = gy[:, :d] - z * gy[:, d:] if need_z else None

        grad_mu = grad_logvar = grad_log_w = None
        if need_params:
            x = torch.cat([z, z * z, z.new_ones(n, 1)], dim=1)  # (N, 2d + 1)
            if b is None:
                gx = (a.unsqueeze(1) * x).T @ r  # (2d + 1, K)
            else:
                both = torch.cat([a.unsqueeze(1) * x, x], dim=1).T @ r  # (2(2d + 1), K)
                gx = both[: 2 * d + 1] + b * both[2 * d + 1 :]
            gz, gz2, s = gx[:d].T, gx[d : 2 * d].T, gx[2 * d]
            s_col = s.unsqueeze(1)
            grad_log_w = s
            grad_mu = precision * (gz - mu * s_col)
            grad_logvar = 0.5 * precision * (gz2 - 2 * mu * gz + mu * mu * s_col) - 0.5 * s_col
        return grad_z, grad_mu, grad_logvar, grad_log_w
