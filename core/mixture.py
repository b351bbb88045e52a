"""Log-densities of a diagonal Gaussian mixture, computed as a quadratic form (no (K, N, z) tensor).

Σ_d log N(z_d; μ_kd, σ²_kd) = −½·Σ_d [log 2π + log σ²_kd + z_d²/σ²_kd − 2·z_d·μ_kd/σ²_kd + μ²_kd/σ²_kd]:
one (N, 2z) × (2z, K) matmul and a (K,) vector, then one logsumexp over K (docs/method.md §1.2, §5).

`mixture_log_prob` is the form the game differentiates: a custom autograd function that returns log p(z) and the
mean responsibility r̄ and whose backward is written from the responsibilities (∂ logsumexp = softmax), with the
parameter gradients as matmuls, so that the (N, K) matrix is written once and read three times a call.
"""

import logging
import math
import os
import warnings
import weakref

import torch

from core.linear import matmul_nt

LOG_2PI = math.log(2 * math.pi)


def component_log_densities(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z_n; μ_k, diag σ²_k) for every point n and component k: (N, z), (K, z), (K, z) -> (N, K)."""
    precision = torch.exp(-logvar)
    quadratic = (z * z) @ precision.T - 2 * z @ (mu * precision).T + (mu * mu * precision).sum(1)
    return -0.5 * (quadratic + logvar.sum(1) + z.shape[-1] * LOG_2PI)


def mixture_logits(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    """log w_k + log N(z_n; μ_k, σ²_k), shape (N, K): logsumexp over K is log p(z), softmax the responsibilities."""
    return component_log_densities(z, mu, logvar) + log_w


def mixture_log_prob(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, log_w: torch.Tensor, mean_responsibility: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(z_n) = logsumexp_k ℓ_nk and r̄_k = (1/N)·Σ_n r_nk, r_nk = softmax_k ℓ_nk, both differentiable.

    ℓ_nk = log w_k + log N(z_n; μ_k, diag σ²_k); z (N, z), mu and logvar (K, z), log_w (K,) -> (N,), (K,).
    Equal in value and gradient to `torch.logsumexp(mixture_logits(...), 1)` and `softmax(...).mean(0)`.
    r̄ is None when `mean_responsibility` is False (a KL alone does not need it: one reduction less a block).
    """
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (z, mu, logvar, log_w))
    return _MixtureLogProb.apply(z, mu, logvar, log_w, keep, mean_responsibility)


class _MixtureLogProb(torch.autograd.Function):
    """Forward: ℓ = [z², z, 1]·[−½σ⁻², μσ⁻², c]ᵀ, r = softmax ℓ, log p = logsumexp ℓ, r̄ = mean r. Only r (N, K) is
    kept for the backward, or, when only z needs a gradient and r̄ is not asked for (a KL through the encoder), only
    r·Y (N, 2z): see below.

    Backward with upstream a_n = ∂/∂log p_n and b_k = ∂/∂r̄_k / N: ∂/∂ℓ_nk = G_nk = r_nk·(a'_n + b_k), a' = a − r·b.
    With Y = [μσ⁻², σ⁻²] and X = [z, z², 1], everything needed is G·Y (for z) and Gᵀ·X (for μ, log σ², log w):
      ∂z = (G·Y)[:, :z] − z ⊙ (G·Y)[:, z:],   ∂log w = s,   ∂μ = σ⁻² ⊙ (Gᵀz − μ·s),
      ∂log σ² = ½·σ⁻² ⊙ (Gᵀz² − 2μ ⊙ Gᵀz + μ²·s) − ½·s,   s = Gᵀ1,
    Without the r̄ term (the KL's case) G = a ⊙ r is never formed: G·Y = a ⊙ (r·Y) and Gᵀ·X = rᵀ·(a ⊙ X) are
    matmuls of r itself with skinny matrices; with it, G is formed block by block, in cache. G·Y goes through
    `matmul_nt` (oneDNN on CPU: half torch.mm's time for this tall, skinny product).

    On CPU with a small latent (2D) the forward is one torch.compile'd loop over the rows (`mixture_rows`,
    `mixture_rows_projected`); otherwise eager PyTorch in blocks of about `CPU_BLOCK_ELEMENTS` logits, so that a
    block's logits and responsibilities are still in cache for the next operation (`_blocked_rows`; log p there is
    max ℓ − log max r, exact: the largest responsibility is 1/Σ_k exp(ℓ_k − max ℓ)). A kept r lives in a buffer lent
    by `_BufferPool`, which the pool gets back when this node is freed.
    """

    @staticmethod
    def forward(ctx, z, mu, logvar, log_w, keep, mean_responsibility):
        n, d = z.shape
        precision = torch.exp(-logvar)
        bias = log_w - 0.5 * ((mu * mu * precision).sum(1) + logvar.sum(1) + d * LOG_2PI)
        weights = torch.cat([-0.5 * precision, mu * precision, bias.unsqueeze(1)], dim=1).T.contiguous()  # (2d+1, K)
        features = torch.cat([z * z, z, z.new_ones(n, 1)], dim=1)  # (N, 2d + 1)
        ctx.set_materialize_grads(False)
        fused = keep and _fuses_rows(z)
        ctx.projected = fused and not mean_responsibility and not any(ctx.needs_input_grad[1:4])
        if ctx.projected:  # only z needs a gradient: a ⊙ (r·Y) is all the backward will read
            log_p, r_y = _FUSED_PROJECTED(features, weights, _skinny_y(mu, precision).T.contiguous())
            ctx.save_for_backward(z, r_y)
            return log_p, None
        responsibilities = _RESPONSIBILITY_BUFFERS.lend(ctx, (n, mu.shape[0]), z) if keep else None
        if fused:
            log_p = _FUSED_ROWS(features, weights, responsibilities)
            r_sum = responsibilities.sum(0) if mean_responsibility else None
        else:
            log_p, r_sum = _blocked_rows(features, weights, responsibilities, mean_responsibility)
        if keep:
            ctx.save_for_backward(z, mu, precision)
            ctx.responsibilities = responsibilities
        return log_p, (r_sum / n if r_sum is not None else None)

    @staticmethod
    def backward(ctx, grad_log_p, grad_r_bar):
        if ctx.projected:
            z, r_y = ctx.saved_tensors
            d = z.shape[1]
            grad_z = None if grad_log_p is None else grad_log_p.unsqueeze(1) * (r_y[:, :d] - z * r_y[:, d:])
            return grad_z, None, None, None, None, None
        z, mu, precision = ctx.saved_tensors
        r = ctx.responsibilities
        n, d = z.shape
        need_z = ctx.needs_input_grad[0]
        need_params = any(ctx.needs_input_grad[1:])
        a = grad_log_p if grad_log_p is not None else z.new_zeros(n)
        b = grad_r_bar / n if grad_r_bar is not None else None
        y_t = _skinny_y(mu, precision).T.contiguous()  # Yᵀ (2d, K)
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
                gy = matmul_nt(g_block, y_t)
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
        return grad_z, grad_mu, grad_logvar, grad_log_w, None, None


def _skinny_y(mu: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Y = [μσ⁻², σ⁻²] (K, 2z): ∂z of the backward is (G·Y)[:, :z] − z ⊙ (G·Y)[:, z:] (see `_MixtureLogProb`)."""
    return torch.cat([mu * precision, precision], dim=1)


def mixture_rows(features: torch.Tensor, weights: torch.Tensor, responsibilities: torch.Tensor) -> torch.Tensor:
    """The forward's arithmetic as one expression, for torch.compile to fuse into a single pass over the rows:
    ℓ = features·weights (as a sum over the few feature columns), r = softmax ℓ written into `responsibilities`,
    returns log p = max ℓ + log Σ_k exp(ℓ_k − max ℓ). Eager PyTorch makes five passes over (N, K) for this; the
    compiled loop makes one, with the exponentials vectorised (2.3 ms instead of 5.6 for N = 102,400, K = 64)."""
    log_p, exp, total = _log_p_and_exponentials(features, weights)
    responsibilities.copy_(exp / total)
    return log_p


def _log_p_and_exponentials(
    features: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ℓ = features·weights as a sum over the few feature columns; returns log p = max ℓ + log Σ_k exp(ℓ_k − max ℓ)
    (N,), exp(ℓ − max ℓ) (N, K) and its row sums (N, 1): r = exp / sum."""
    logits = (features.unsqueeze(2) * weights.unsqueeze(0)).sum(1)
    top = logits.amax(1, keepdim=True)
    exp = torch.exp(logits - top)
    total = exp.sum(1, keepdim=True)
    return (top + torch.log(total)).squeeze(1), exp, total


FUSED_MAX_Z = 8
"""Latent sizes up to which the forward is the compiled loop (2D: z = 2). Above, ℓ is a real matmul (images: z = 128)
that BLAS does better, and the blocked eager path stays."""


class _CompiledOnce:
    """`torch.compile(function)` built on first use; if compiling fails (no C++ compiler, say), a warning and the
    eager path from then on. PRIORSTUDY_COMPILE=0 turns it off."""

    def __init__(self, function):
        self.function = function
        self.compiled = None
        self.enabled = os.environ.get("PRIORSTUDY_COMPILE", "1") != "0"

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            # inductor asks cpp_extension for CUDA_HOME, which warns on every CPU-only machine: not our concern
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            self.compiled = torch.compile(self.function)
        try:
            return self.compiled(*args)
        except Exception as error:  # whatever the compiler raised: fall back, and say so once
            warnings.warn(
                f"torch.compile of {self.function.__name__} failed ({error!r}); using eager PyTorch", stacklevel=2
            )
            self.enabled = False
            return self.function(*args)


def mixture_rows_projected(
    features: torch.Tensor, weights: torch.Tensor, y_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mixture_rows` for a call whose only gradient is z's: returns log p and r·Y (N, c) for Yᵀ = `y_t` (c, K), and
    never stores r. The backward of a KL in z is a ⊙ (r·Y) with Y known at the forward (see `_MixtureLogProb`), so
    the (N, K) responsibilities need neither be written (26 MB at N = 102,400) nor read back. Yᵀ, not Y: each of
    the c sums then runs along K, the contiguous axis, and vectorises (with Y (K, c) the compiled loop went over K
    one scalar at a time: 9.6 ms instead of 5.9 at N = 102,400, K = 64, c = 4)."""
    log_p, exp, total = _log_p_and_exponentials(features, weights)
    return log_p, (exp.unsqueeze(1) * y_t.unsqueeze(0)).sum(2) / total


_FUSED_ROWS = _CompiledOnce(mixture_rows)
_FUSED_PROJECTED = _CompiledOnce(mixture_rows_projected)


def _fuses_rows(z: torch.Tensor) -> bool:
    return _FUSED_ROWS.enabled and _FUSED_PROJECTED.enabled and z.device.type == "cpu" and z.shape[1] <= FUSED_MAX_Z


def _blocked_rows(
    features: torch.Tensor, weights: torch.Tensor, responsibilities: torch.Tensor | None, mean_responsibility: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The forward in eager PyTorch, block by block: log p (N,), r summed over rows (K,) if asked for, and r into
    `responsibilities` when given (else into a block-sized scratch buffer)."""
    n, components = features.shape[0], weights.shape[1]
    log_p = features.new_empty(n)
    r_sum = features.new_zeros(components) if mean_responsibility else None
    block = _block_rows(features, components)
    logits = features.new_empty(min(block, n), components)
    scratch = torch.empty_like(logits) if responsibilities is None else None
    for start in range(0, n, block):
        stop = min(start + block, n)
        logits_block = torch.mm(features[start:stop], weights, out=logits[: stop - start])
        r_block = scratch[: stop - start] if scratch is not None else responsibilities[start:stop]
        torch.ops.aten._softmax.out(logits_block, 1, False, out=r_block)
        torch.sub(logits_block.amax(1), torch.log(r_block.amax(1)), out=log_p[start:stop])
        if r_sum is not None:
            r_sum += r_block.sum(0)
    return log_p, r_sum


CPU_BLOCK_ELEMENTS = 8192 * 64  # 2 MiB of float32 logits: a block's logits and responsibilities stay in cache


def _block_rows(rows: torch.Tensor, components: int) -> int:
    """Rows a block: cache-sized on CPU; on an accelerator one block (kernel launches cost more than traffic)."""
    if rows.device.type != "cpu":
        return max(rows.shape[0], 1)
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
