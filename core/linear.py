"""nn.Linear whose CPU float32 matmuls run on oneDNN: the same y = x·Wᵀ + b and gradients, about twice as fast here.

PyTorch's CPU matmul calls MKL, whose sgemm takes a non-AVX-512 path on AMD processors (≈ 110 GFLOP/s on one core
of this machine's Zen CPU for the 2D MLP's 512×256 @ 256×256); oneDNN, which PyTorch also ships (inductor's kernel
for Linear), dispatches on the instruction set and runs the same product at ≈ 250 GFLOP/s. Forward, input gradient
and weight gradient are each one oneDNN product (transposes are passed as views, no copies). Anything else
(float64, an accelerator, autocast, inputs that are not (N, in) matrices, a PyTorch without oneDNN) takes F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a·bᵀ (+ bias) on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def engine_will_use(ctx, index: int) -> bool:
    """Whether this backward's gradient for input `index` reaches what the running backward asked for.

    Built-in nodes compute only the gradients the engine will use: `autograd.grad` on the encoder's parameters
    skips the decoder's weight gradients on the way. A custom Function's `needs_input_grad` only says that the
    input requires grad, so the game's steps, which differentiate for one player at a time, would compute every
    other player's weight gradients and drop them (a third of the 2D step's matmuls). The engine knows: a node it
    will not run gets nothing; a leaf that `autograd.grad` captures is the one case it declines to answer, and that
    leaf is wanted.
    """
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    if node is None:
        return False
    try:
        return torch._C._will_engine_execute_node(node)
    except RuntimeError:
        return True


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _product(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = _product(grad, weight.t()) if engine_will_use(ctx, 0) else None
        grad_weight = _product(grad.t(), x.t()) if engine_will_use(ctx, 1) else None
        grad_bias = grad.sum(0) if engine_will_use(ctx, 2) else None
        return grad_x, grad_weight, grad_bias


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a·bᵀ for matrices a (N, c) and b (K, c): on oneDNN where `uses_onednn`, else torch.mm."""
    if uses_onednn(a, b):
        return _product(a, b)
    return a @ b.T


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        ONEDNN
        and x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), on oneDNN where `uses_onednn`."""
    if uses_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, state_dict and initialisation) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
