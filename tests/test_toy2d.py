"""The 2D toy densities follow docs/method.md §2.1: shapes, determinism and each density's geometry."""

import math

import pytest
import torch

from core.data.toy2d import TOY_DATASETS, grid_scale, sample_toy2d


def _sample(name: str, n: int = 4000, seed: int = 0) -> torch.Tensor:
    return sample_toy2d(name, n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TOY_DATASETS)
@pytest.mark.parametrize("n", [512, 1001])
def test_shape_dtype_and_determinism(name, n):
    x = _sample(name, n)
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, _sample(name, n))
    assert not torch.equal(x, _sample(name, n, seed=1))


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset '9gaussians' \(expected: 8gaussians, 2spirals"):
        sample_toy2d("9gaussians", 10)
    with pytest.raises(ValueError, match="unknown dataset"):
        grid_scale("moons")


def test_grid_scale():
    assert [grid_scale(name) for name in TOY_DATASETS] == [1.0, 2.0, 2.0, 2.0]


def test_8gaussians_points_lie_near_the_eight_centres():
    x = _sample("8gaussians")
    angles = torch.arange(8) * math.pi / 4
    centres = 2 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) / 1.414
    dist, nearest = torch.cdist(x, centres).min(dim=1)
    assert dist.max() < 0.1
    counts = torch.bincount(nearest, minlength=8)
    assert (counts > 4000 / 8 * 0.8).all()  # k uniform: every centre used about equally


def test_rings_radii_and_shares():
    x = _sample("rings")
    radii = torch.tensor([3.0, 2.25, 1.5, 0.75])
    dist, ring = (x.norm(dim=1, keepdim=True) - radii).abs().min(dim=1)
    assert dist.max() < 0.45  # noise 0.08 per axis
    assert (dist < 0.16).float().mean() > 0.9
    shares = torch.bincount(ring, minlength=4) / len(x)
    assert torch.allclose(shares, torch.full((4,), 0.25), atol=0.04)


def test_checkerboard_points_fill_the_dark_squares_of_a_4x4_board():
    x = _sample("checkerboard")
    assert (x.abs() <= 4).all()
    cells = torch.floor(x / 2).long()  # 2x2 squares indexed -2..1 per axis
    assert ((cells.sum(dim=1) % 2) == 0).all()
    occupied = {tuple(c) for c in cells.tolist()}
    assert len(occupied) == 8


def test_2spirals_is_point_symmetric_and_bounded():
    x = _sample("2spirals")
    assert (x.abs() < 4.5).all()
    assert x.mean(dim=0).abs().max() < 0.1  # arm 2 = −arm 1
    # without the 0.1 noise the points sit at radius ≈ t/3 ≤ 3π/3 from the origin plus a jitter of at most 0.5·√2/3
    assert x.norm(dim=1).max() < math.pi + 0.5 * math.sqrt(2) / 3 + 0.5
