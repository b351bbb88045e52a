"""Encoder and decoder networks: the MLPs of the 2D benchmark (and the conv nets of the image benchmark)."""

import torch
from torch import nn

from core.linear import Linear


def mlp(n_in: int, n_out: int, hidden: int = 256, hidden_layers: int = 4) -> nn.Sequential:
    """Linear(in, 256)+ReLU, 3 x [Linear(256, 256)+ReLU], Linear(256, out): Soft-IntroVAE's 2D network.

    `Linear` is nn.Linear computed on oneDNN on CPU (core/linear.py): same parameters, values and gradients.
    """
    layers: list[nn.Module] = [Linear(n_in, hidden), nn.ReLU()]
    for _ in range(hidden_layers - 1):
        layers += [Linear(hidden, hidden), nn.ReLU()]
    layers.append(Linear(hidden, n_out))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """q(z|x) for 2D data: one MLP whose output splits into (mu, logvar)."""

    def __init__(self, x_dim: int = 2, z_dim: int = 2):
        super().__init__()
        self.net = mlp(x_dim, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    """p(x|z) for 2D data: an MLP with a linear output (the mean of a fixed-variance Gaussian)."""

    def __init__(self, z_dim: int = 2, x_dim: int = 2):
        super().__init__()
        self.net = mlp(z_dim, x_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
