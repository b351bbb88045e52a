"""nn.Linear whose CPU float32 products run on oneDNN: the same y = x·Wᵀ + b and gradients, and, for a Linear
followed by a ReLU, one product with the ReLU as its epilogue (one autograd node, no separate ReLU pass).

PyTorch's CPU matmul calls MKL; oneDNN, which PyTorch also ships (inductor's kernel for Linear), dispatches on the
instruction set and runs the forward product x·Wᵀ and the input gradient G·W 10–20 % faster on the AMD EPYC
machines this project runs on (512×256 @ 256×256, 2 threads: 189 against 161 GFLOP/s with AVX-512), with the ReLU
in the same pass. Both are one oneDNN product each, transposes passed as views. The weight gradient Gᵀ·x stays on
torch.mm, which reads the transposed operand in place; oneDNN copies it first and was measured slower there
(127 against 185 GFLOP/s with AVX-512, 2 threads) or no faster (AVX2). Anything else (float64, an accelerator,
autocast, inputs that are not (N, in) matrices, a PyTorch without oneDNN) takes F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, epilogue: str = "none"):
    """a·bᵀ (+ bias), then the epilogue ("none" or "relu"), on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, epilogue, [], "")


def _weight_product(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight gradient Gᵀ·x (out, in), on torch.mm (see the module's docstring)."""
    return torch.mm(grad.t(), x)


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
    """y = x·Wᵀ + b, or y = relu(x·Wᵀ + b) with `relu`: the ReLU's backward is then G ⊙ [y > 0] (y > 0 exactly
    where x·Wᵀ + b > 0), so the node keeps y and no pre-activation is ever stored."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu):
        y = _product(x, weight, bias, "relu" if relu else "none")
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if y is not None:
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        grad_x = _product(grad, weight.t()) if engine_will_use(ctx, 0) else None
        grad_weight = _weight_product(grad, x) if engine_will_use(ctx, 1) else None
        grad_bias = grad.sum(0) if engine_will_use(ctx, 2) else None
        return grad_x, grad_weight, grad_bias, None


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
        return _OneDNNLinear.apply(x, weight, bias, False)
    return F.linear(x, weight, bias)


def linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """relu(F.linear(x, weight, bias)), as one oneDNN product with a ReLU epilogue where `uses_onednn`."""
    if uses_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias, True)
    return F.relu(F.linear(x, weight, bias))


class Linear(nn.Linear):
    """nn.Linear (same parameters, state_dict and initialisation) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Sequential(nn.Sequential):
    """nn.Sequential (same modules, same state_dict keys) that runs each `Linear` followed by an `nn.ReLU` as
    `linear_relu`: one product and one autograd node instead of two passes over the activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, Linear) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
                x = linear_relu(x, layer.weight, layer.bias)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x
