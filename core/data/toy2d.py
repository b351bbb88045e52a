"""The 2D toy densities of Soft-IntroVAE: every batch is sampled fresh, there is no fixed dataset.

All randomness comes from torch with the caller's generator, so one generator seed gives one batch.
"""

import math

import torch

TOY_DATASETS = ("8gaussians", "2spirals", "checkerboard", "rings")

# Half-width of the evaluation grid [-2s, 2s]^2 is 2 * grid_scale.
_GRID_SCALE = {"8gaussians": 1.0, "2spirals": 2.0, "checkerboard": 2.0, "rings": 2.0}


def _check(name: str) -> None:
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown dataset {name!r} (expected: {', '.join(TOY_DATASETS)})")


def grid_scale(name: str) -> float:
    """The scale s of a dataset: histograms and the gnELBO grid cover [-2s, 2s]^2."""
    _check(name)
    return _GRID_SCALE[name]


def _eight_gaussians(n: int, g: torch.Generator | None, device) -> torch.Tensor:
    """2·(cos, sin)(k·45°), k uniform in 0..7, + N(0, 0.02²), all divided by 1.414."""
    angles = torch.randint(8, (n,), generator=g, device=device) * (math.pi / 4)
    centres = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return (centres + 0.02 * torch.randn(n, 2, generator=g, device=device)) / 1.414


def _two_spirals(n: int, g: torch.Generator | None, device) -> torch.Tensor:
    """Arm 1 = (−t·cos t + 0.5·U, t·sin t + 0.5·U), t = √U·540·2π/360; arm 2 = −arm 1; /3, then + 0.1·N(0, I)."""
    half = (n + 1) // 2  # an odd n takes one point fewer from the mirrored arm
    t = torch.sqrt(torch.rand(half, generator=g, device=device)) * (540 * 2 * math.pi / 360)
    jitter = 0.5 * torch.rand(half, 2, generator=g, device=device)
    arm = torch.stack([-t * torch.cos(t), t * torch.sin(t)], dim=1) + jitter
    x = torch.cat([arm, -arm])[:n] / 3
    return x + 0.1 * torch.randn(n, 2, generator=g, device=device)


def _checkerboard(n: int, g: torch.Generator | None, device) -> torch.Tensor:
    """x1 ~ U(−2, 2); x2 = U − 2·Bernoulli(½) + (floor(x1) mod 2); the point (x1, x2) × 2."""
    x1 = 4 * torch.rand(n, generator=g, device=device) - 2
    coin = torch.randint(2, (n,), generator=g, device=device)
    x2 = torch.rand(n, generator=g, device=device) - 2 * coin + torch.remainder(torch.floor(x1), 2)
    return 2 * torch.stack([x1, x2], dim=1)


def _rings(n: int, g: torch.Generator | None, device) -> torch.Tensor:
    """Rings of radii 3·(1, 0.75, 0.5, 0.25) with n//4 evenly spaced points each (the innermost takes the
    remainder), resampled with replacement, + N(0, 0.08²)."""
    quarter = n // 4
    counts = (quarter, quarter, quarter, n - 3 * quarter)
    radii, angles = [], []
    for radius, count in zip((1.0, 0.75, 0.5, 0.25), counts):
        angles.append(torch.arange(count, device=device) * (2 * math.pi / max(count, 1)))
        radii.append(torch.full((count,), 3.0 * radius, device=device))
    r, a = torch.cat(radii), torch.cat(angles)
    points = torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1)
    points = points[torch.randint(n, (n,), generator=g, device=device)]
    return points + 0.08 * torch.randn(n, 2, generator=g, device=device)


_SAMPLERS = {"8gaussians": _eight_gaussians, "2spirals": _two_spirals, "checkerboard": _checkerboard, "rings": _rings}


def sample_toy2d(name: str, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """n fresh points of a toy density as an (n, 2) float32 tensor (docs/method.md §2.1, and each sampler)."""
    _check(name)
    return _SAMPLERS[name](n, generator, device).float()
