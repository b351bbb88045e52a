"""Encoder and decoder networks: the MLPs of the 2D benchmark (the conv nets of the image benchmark are in
core/conv_nets.py), and the bf16 autocast both kinds of net run under with `autocast: bf16`.

autocast 'bf16' runs a net's layers under bf16 autocast and returns its input's dtype (float32; float64 stays
float64, as the equivalence tests need): the autocast region ends at the net's output, so the mixture
log-densities, KLs and reconstruction errors that the game computes stay in float32. For the 2D nets it is an
opt-in for hardware with native bf16 (a GPU, or a CPU with avx512_bf16 or AMX); elsewhere a CPU emulates bf16
products (about 10× slower than float32 on an AVX2 CPU), which `warn_if_bf16_is_emulated` says.
"""

import warnings

import torch
from torch import nn

from core.config import AUTOCAST_MODES
from core.linear import Linear, Sequential


def check_autocast(autocast: str) -> str:
    if autocast not in AUTOCAST_MODES:
        raise ValueError(f"unknown autocast {autocast!r} (expected: {', '.join(AUTOCAST_MODES)})")
    return autocast


def autocast_region(x: torch.Tensor, autocast: str) -> torch.autocast:
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast == "bf16")


def has_native_bf16(device: torch.device) -> bool:
    """Whether bf16 products run in hardware here: CUDA's bf16 support, or a CPU with avx512_bf16 or AMX tiles."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def warn_if_bf16_is_emulated(autocast: str, device: torch.device) -> None:
    if autocast == "bf16" and not has_native_bf16(device):
        warnings.warn(
            f"autocast=bf16 on a {device.type} without native bf16 (no avx512_bf16 or AMX): its bf16 products are "
            "emulated, several times slower than fp32",
            stacklevel=2,
        )


def mlp(n_in: int, n_out: int, hidden: int = 256, hidden_layers: int = 4) -> nn.Sequential:
    """Linear(in, 256)+ReLU, 3 x [Linear(256, 256)+ReLU], Linear(256, out): Soft-IntroVAE's 2D network.

    `Linear` is nn.Linear computed on oneDNN on CPU, and `Sequential` runs each Linear+ReLU as one product with
    a ReLU epilogue (core/linear.py): same modules, state_dict, values and gradients.
    """
    layers: list[nn.Module] = [Linear(n_in, hidden), nn.ReLU()]
    for _ in range(hidden_layers - 1):
        layers += [Linear(hidden, hidden), nn.ReLU()]
    layers.append(Linear(hidden, n_out))
    return Sequential(*layers)


class MLPEncoder(nn.Module):
    """q(z|x) for 2D data: one MLP whose output splits into (mu, logvar)."""

    def __init__(self, x_dim: int = 2, z_dim: int = 2, autocast: str = "fp32"):
        super().__init__()
        self.net = mlp(x_dim, 2 * z_dim)
        self.autocast = check_autocast(autocast)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_region(x, self.autocast):
            out = self.net(x)
        mu, logvar = out.to(x.dtype).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    """p(x|z) for 2D data: an MLP with a linear output (the mean of a fixed-variance Gaussian)."""

    def __init__(self, z_dim: int = 2, x_dim: int = 2, autocast: str = "fp32"):
        super().__init__()
        self.net = mlp(z_dim, x_dim)
        self.autocast = check_autocast(autocast)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with autocast_region(z, self.autocast):
            out = self.net(z)
        return out.to(z.dtype)
