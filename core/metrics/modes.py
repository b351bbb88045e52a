"""Mode coverage of 8gaussians: whether a model learned the data, read directly off its samples.

The histogram kl mixes two failures (mass off the modes, modes missing); these two numbers separate them:
`near_mode` = share of generated points within `radius` of a true centre, `modes_covered` = how many of the 8
centres are the nearest centre of at least `min_share` of those near points. With the data's noise σ = 0.02/1.414,
a true sample lies within 0.1 of its centre with probability ≈ 1 (the radius is 7σ).
"""

from __future__ import annotations

import math

import numpy as np

RADIUS = 0.1
MIN_SHARE = 0.01  # a mode holding under 1 % of the near points (10× below its 1/8) is not covered
LEARNED_NEAR_MODE = 0.8  # the bar a trained 8gaussians model must clear (with all 8 modes covered)


def eight_gaussians_centres() -> np.ndarray:
    """The 8 centres 2·(cos, sin)(k·45°)/1.414, as core.data.toy2d draws them."""
    angles = np.arange(8) * (math.pi / 4)
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1) / 1.414


def mode_coverage(points: np.ndarray, radius: float = RADIUS, min_share: float = MIN_SHARE) -> dict[str, float]:
    """{'near_mode': share of points within `radius` of a centre, 'modes_covered': centres that are the nearest
    centre of at least `min_share` of the near points (0 when none is near)}."""
    points = np.asarray(points, dtype=np.float64)
    distances = np.linalg.norm(points[:, None, :] - eight_gaussians_centres()[None], axis=2)
    near = distances.min(1) < radius
    counts = np.bincount(distances.argmin(1)[near], minlength=8)
    covered = int((counts >= max(1, min_share * near.sum())).sum()) if near.any() else 0
    return {"near_mode": float(near.mean()), "modes_covered": covered}


def learned(metrics: dict[str, float]) -> bool:
    """Whether an 8gaussians run learned the data: all 8 modes covered and ≥ 80 % of samples near a mode."""
    return metrics["modes_covered"] == 8 and metrics["near_mode"] >= LEARNED_NEAR_MODE
