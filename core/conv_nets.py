"""Soft-IntroVAE's convolutional encoder and decoder for the image benchmarks (docs/method.md §2.3).

Every conv is bias-free except the decoder's last; BatchNorm after every other conv; LeakyReLU(0.2); AvgPool2 down,
nearest Upsample×2 up; the decoder has no output activation (its output is the mean of a fixed-variance Gaussian,
scored by MSE against images in [0, 1]). The nets work unchanged in torch.channels_last memory format.

autocast 'bf16' runs a net's layers under bf16 autocast and returns float32 (core/nets.py: `autocast_region`).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from core.nets import autocast_region, check_autocast

__all__ = ["ConvDecoder", "ConvEncoder", "ResidualBlock", "default_channels"]

_DEFAULT_CHANNELS = {32: (64, 128, 256), 28: (64, 128), 8: (32, 64)}


def default_channels(image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The paper's channel counts: (64, 128, 256) for 32×32 (CIFAR-10), (64, 128) for 28×28 (MNIST, FMNIST).

    8×8 (scikit-learn's digits, our test set) gets (32, 64): two halvings take 8×8 to 2×2, and the narrower
    layers suit 1,500 training images.
    """
    _, height, width = image_shape
    if height != width or height not in _DEFAULT_CHANNELS:
        sizes = ", ".join(f"{s}×{s}" for s in _DEFAULT_CHANNELS)
        raise ValueError(f"no default channels for {height}×{width} images (known: {sizes}); pass channels")
    return _DEFAULT_CHANNELS[height]


def _bottleneck_size(image_shape: tuple[int, int, int], channels: tuple[int, ...]) -> tuple[int, int]:
    """Spatial size after one halving per channel count; the decoder doubles back, so it must divide exactly."""
    _, height, width = image_shape
    factor = 2 ** len(channels)
    if height % factor or width % factor:
        raise ValueError(f"{height}×{width} images cannot be halved {len(channels)} times (channels {channels})")
    return height // factor, width // factor


class ResidualBlock(nn.Module):
    """conv3×3-BN-LReLU(0.2)-conv3×3-BN, plus the identity (a bias-free 1×1 conv when in ≠ out), then LReLU(0.2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class ConvEncoder(nn.Module):
    """q(z|x): Conv5×5(C→ch₀)+BN+LReLU+AvgPool2, [ResBlock(→ch)+AvgPool2] per further ch, ResBlock, Linear(→2z)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        z_dim: int,
        channels: tuple[int, ...] | None = None,
        autocast: str = "fp32",
    ):
        super().__init__()
        self.autocast = check_autocast(autocast)
        channels = tuple(channels or default_channels(image_shape))
        height, width = _bottleneck_size(image_shape, channels)
        layers: list[nn.Module] = [
            nn.Conv2d(image_shape[0], channels[0], 5, padding=2, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.LeakyReLU(0.2),
            nn.AvgPool2d(2),
        ]
        for in_ch, out_ch in itertools.pairwise(channels):
            layers += [ResidualBlock(in_ch, out_ch), nn.AvgPool2d(2)]
        layers.append(ResidualBlock(channels[-1], channels[-1]))
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(channels[-1] * height * width, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_region(x, self.autocast):
            out = self.fc(self.body(x).flatten(1))
        mu, logvar = out.float().chunk(2, dim=1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """p(x|z): Linear(z→flat)+ReLU, reshape, [ResBlock(→ch)+Upsample×2] per ch in reverse, ResBlock, Conv5×5(→C)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        z_dim: int,
        channels: tuple[int, ...] | None = None,
        autocast: str = "fp32",
    ):
        super().__init__()
        self.autocast = check_autocast(autocast)
        channels = tuple(channels or default_channels(image_shape))
        height, width = _bottleneck_size(image_shape, channels)
        self.start_shape = (channels[-1], height, width)
        self.fc = nn.Sequential(nn.Linear(z_dim, channels[-1] * height * width), nn.ReLU())
        layers: list[nn.Module] = []
        in_ch = channels[-1]
        for out_ch in reversed(channels):
            layers += [ResidualBlock(in_ch, out_ch), nn.Upsample(scale_factor=2, mode="nearest")]
            in_ch = out_ch
        layers += [ResidualBlock(in_ch, in_ch), nn.Conv2d(in_ch, image_shape[0], 5, padding=2)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with autocast_region(z, self.autocast):
            x = self.body(self.fc(z).view(z.shape[0], *self.start_shape))
        return x.float()
