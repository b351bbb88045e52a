"""Log-densities of a diagonal Gaussian mixture, computed as a quadratic form (no (K, N, z) tensor).

Σ_d log N(z_d; μ_kd, σ²_kd) = −½·Σ_d [log 2π + log σ²_kd + z_d²/σ²_kd − 2·z_d·μ_kd/σ²_kd + μ²_kd/σ²_kd]:
one (N, 2z) × (2z, K) matmul and a (K,) vector, then one logsumexp over K (shared/DESIGN.md §5).

`mixture_log_prob` is the form the game differentiates: a custom autograd function that returns log p(z) and the
mean responsibility r̄ and whose backward is written from the responsibilities (∂ logsumexp = softmax), with the
parameter gradients as matmuls, so that the (N, K) matrix is written once and read three times a call.
"""

import math
import weakref

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
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (z, mu, logvar, log_w))
    return _MixtureLogProb.apply(z, mu, logvar, log_w, keep)


class _MixtureLogProb(torch.autograd.Function):
    """Forward: ℓ = [z², z]·[−½σ⁻², μσ⁻²]ᵀ + c (one addmm), r = softmax ℓ, log p = max ℓ − log max r (exact: the
    largest responsibility is 1/Σ_k exp(ℓ_k − max ℓ)), r̄ = mean r. Only r (N, K) is kept for the backward.

    Backward with upstream a_n = ∂/∂log p_n and b_k = ∂/∂r̄_k / N: ∂/∂ℓ_nk = G_nk = r_nk·(a'_n + b_k), a' = a − r·b.
    With Y = [μσ⁻², σ⁻²] and X = [z, z², 1], everything needed is G·Y (for z) and Gᵀ·X (for μ, log σ², log w):
      ∂z = (G·Y)[:, :z] − z ⊙ (G·Y)[:, z:],   ∂log w = s,   ∂μ = σ⁻² ⊙ (Gᵀz − μ·s),
      ∂log σ² = ½·σ⁻² ⊙ (Gᵀz² − 2μ ⊙ Gᵀz + μ²·s) − ½·s,   s = Gᵀ1,
    Without the r̄ term (the KL's case) G = a ⊙ r is never formed: G·Y = a ⊙ (r·Y) and Gᵀ·X = rᵀ·(a ⊙ X) are
    matmuls of r itself with skinny matrices; with it, G is formed block by block, in cache.

    On CPU the rows go in blocks of about `CPU_BLOCK_ELEMENTS` logits, so that a block's logits and responsibilities
    are still in cache for the next operation: the (N, K) matrix is written once and read once more by the backward.
    It lives in a buffer lent by `_BufferPool`, which the pool gets back when this node is freed; without a backward
    to come (`keep` False: no grad mode, or no input needing one) a block-sized scratch buffer serves every block.
    """

    @staticmethod
    def forward(ctx, z, mu, logvar, log_w, keep):
        n, d = z.shape
        precision = torch.exp(-logvar)
        weights = torch.cat([-0.5 * precision, mu * precision], dim=1).T  # (2d, K)
        bias = log_w - 0.5 * ((mu * mu * precision).sum(1) + logvar.sum(1) + d * LOG_2PI)
        features = torch.cat([z * z, z], dim=1)  # (N, 2d)
        log_p = z.new_empty(n)
        r_sum = torch.zeros_like(bias)
        block = _block_rows(z, mu.shape[0])
        logits = z.new_empty(min(block, n), mu.shape[0])
        if keep:
            responsibilities = _RESPONSIBILITY_BUFFERS.lend(ctx, (n, mu.shape[0]), z)
        else:
            scratch = torch.empty_like(logits)
        for start in range(0, n, block):
            stop = min(start + block, n)
            logits_block = logits[: stop - start]
            r_block = responsibilities[start:stop] if keep else scratch[: stop - start]
            torch.addmm(bias, features[start:stop], weights, out=logits_block)
            torch.ops.aten._softmax.out(logits_block, 1, False, out=r_block)
            torch.sub(logits_block.amax(1), torch.log(r_block.amax(1)), out=log_p[start:stop])
            r_sum += r_block.sum(0)
        if keep:
            ctx.save_for_backward(z, mu, precision)
            ctx.responsibilities = responsibilities
            ctx.set_materialize_grads(False)
        return log_p, r_sum / n

    @staticmethod
    def backward(ctx, grad_log_p, grad_r_bar):
        z, mu, precision = ctx.saved_tensors
        r = ctx.responsibilities
        n, d = z.shape
        need_z = ctx.needs_input_grad[0]
        need_params = any(ctx.needs_input_grad[1:])
        a = grad_log_p if grad_log_p is not None else z.new_zeros(n)
        b = grad_r_bar / n if grad_r_bar is not None else None
        y = torch.cat([mu * precision, precision], dim=1)  # (K, 2d)
        y_t = y.T.contiguous()
        grad_z = z.new_empty(n, d) if need_z else None
        gx = z.new_zeros(2 * d + 1, r.shape[1]) if need_params else None  # [Gᵀz, Gᵀz², Gᵀ1]ᵀ
        block = _block_rows(z, mu.shape[0])
        for start in range(0, n, block):
            stop = min(start + block, n)
            r_block, a_block, z_block = r[start:stop], a[start:stop], z[start:stop]
            if b is None:  # G = a ⊙ r: scale the skinny side instead
                g_block, row_scale = r_block, a_block.unsqueeze(1)
            else:
                g_block, row_scale = r_block * ((a_block - r_block @ b).unsqueeze(1) + b), None
            if need_z:
                gy = _times(g_block, y, y_t)
                if row_scale is not None:
                    gy = row_scale * gy
                torch.sub(gy[:, :d], z_block * gy[:, d:], out=grad_z[start:stop])
            if need_params:
                x_block = torch.cat([z_block, z_block * z_block, z_block.new_ones(stop - start, 1)], dim=1)
                if row_scale is not None:
                    x_block = row_scale * x_block
                gx.addmm_(x_block.T, g_block)

        grad_mu = grad_logvar = grad_log_w = None
        if need_params:
            gz, gz2, s = gx[:d].T, gx[d : 2 * d].T, gx[2 * d]
            s_col = s.unsqueeze(1)
            grad_log_w = s
            grad_mu = precision * (gz - mu * s_col)
            grad_logvar = 0.5 * precision * (gz2 - 2 * mu * gz + mu * mu * s_col) - 0.5 * s_col
        return grad_z, grad_mu, grad_logvar, grad_log_w, None


def _times(m: torch.Tensor, y: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
    """m·y for an (N, K) m and a skinny (K, c) y. With few columns BLAS is several times faster computing (yᵀ·mᵀ)ᵀ
    (a short, wide product) than m·y (a tall one with c = 4 outputs a row); the result is then a transposed view."""
    return torch.mm(y_t, m.T).T if y.shape[1] < 16 else m @ y


CPU_BLOCK_ELEMENTS = 8192 * 64  # 2 MiB of float32 logits: a block's logits and responsibilities stay in cache


def _block_rows(z: torch.Tensor, components: int) -> int:
    """Rows a block: cache-sized on CPU; on an accelerator one block (kernel launches cost more than traffic)."""
    if z.device.type != "cpu":
        return max(z.shape[0], 1)
    return max(CPU_BLOCK_ELEMENTS // components, 1)


class _BufferPool:
    """Reusable buffers for the responsibilities a node keeps from its forward to its backward.

    A fresh (N, K) tensor a call (26 MB at N = 102,400, K = 64) is fresh memory from the OS each time, and touching
    it the first time (page faults) costs about as much as the softmax that fills it. A buffer is lent to one
    autograd node and comes back to the pool when that node is freed (after its backward, or with its graph), so a
    training step reuses the same few buffers.
    """

    def __init__(self) -> None:
        self.free: dict[tuple, list[torch.Tensor]] = {}

    def lend(self, owner: object, shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        key = (shape, like.dtype, like.device)
        free = self.free.setdefault(key, [])
        buffer = free.pop() if free else like.new_empty(shape)
        weakref.finalize(owner, free.append, buffer)
        return buffer


_RESPONSIBILITY_BUFFERS = _BufferPool()
