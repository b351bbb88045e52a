"""Mode coverage on samples whose answer is known: the true density, a collapsed model, a blurred one."""

import numpy as np
import torch

from core.data.toy2d import sample_toy2d
from core.metrics.modes import eight_gaussians_centres, learned, mode_coverage


def test_true_samples_cover_all_modes_and_lie_near_them():
    real = sample_toy2d("8gaussians", 5000, generator=torch.Generator().manual_seed(0)).numpy()
    coverage = mode_coverage(real)
    assert coverage == {"near_mode": 1.0, "modes_covered": 8}
    assert learned(coverage)


def test_centres_match_the_sampler():
    real = sample_toy2d("8gaussians", 4000, generator=torch.Generator().manual_seed(1)).numpy()
    nearest = np.linalg.norm(real[:, None] - eight_gaussians_centres()[None], axis=2).min(1)
    assert nearest.max() < 0.1


def test_a_model_on_three_modes_covers_three():
    centres = eight_gaussians_centres()[[0, 2, 5]]
    points = centres[np.arange(3000) % 3] + 0.01 * np.random.default_rng(0).standard_normal((3000, 2))
    coverage = mode_coverage(points)
    assert coverage["modes_covered"] == 3 and coverage["near_mode"] == 1.0
    assert not learned(coverage)


def test_blurred_samples_are_not_near_and_a_stray_point_covers_no_mode():
    rng = np.random.default_rng(0)
    blurred = sample_toy2d("8gaussians", 5000, generator=torch.Generator().manual_seed(2)).numpy()
    blurred = blurred + 0.2 * rng.standard_normal(blurred.shape)
    coverage = mode_coverage(blurred)
    assert coverage["near_mode"] < 0.3 and not learned(coverage)
    stray = np.vstack([np.tile(eight_gaussians_centres()[:1], (999, 1)), eight_gaussians_centres()[1:2]])
    assert mode_coverage(stray)["modes_covered"] == 1
    assert mode_coverage(np.full((10, 2), 5.0)) == {"near_mode": 0.0, "modes_covered": 0}
