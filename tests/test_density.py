"""2D density metrics on cases with known answers, and the run figure."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data.toy2d import sample_toy2d
from core.figures import plot_2d_run
from core.metrics.density import (
    PAPER_GRID,
    PAPER_REAL_POINTS,
    gnelbo,
    histogram_jsd,
    histogram_kl,
    histograms,
    neg_elbo_grid,
    paper_grid_weights,
    sample_entropy_kl,
)

EPS = 1e-14


def _points(name: str, n: int, seed: int) -> np.ndarray:
    return sample_toy2d(name, n, generator=torch.Generator().manual_seed(seed)).numpy()


def test_histograms_are_densities_over_the_range():
    scale = 2.0
    p, q = histograms(_points("rings", 5000, 0), _points("2spirals", 5000, 1), scale)
    assert p.shape == q.shape == (100, 100)
    cell_area = (4 * scale / 100) ** 2
    assert (p.sum() * cell_area) == pytest.approx(1.0)


def test_kl_equals_torch_kl_div_batchmean_and_the_formula():
    real, generated, scale = _points("8gaussians", 5000, 0), _points("2spirals", 5000, 1), 1.0
    p, q = histograms(real, generated, scale)
    expected = F.kl_div(torch.log(torch.from_numpy(q) + EPS), torch.from_numpy(p), reduction="batchmean").item()
    support = p > 0
    by_hand = (p[support] * (np.log(p[support]) - np.log(q[support] + EPS))).sum() / 100
    assert histogram_kl(real, generated, scale) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(by_hand, rel=1e-9)
    assert expected > 1.0


def test_jsd_equals_its_kl_div_form():
    real, generated, scale = _points("rings", 5000, 0), _points("checkerboard", 5000, 1), 2.0
    p, q = (torch.from_numpy(h) for h in histograms(real, generated, scale))
    m = (p + q) / 2
    expected = (
        0.5
        * (
            F.kl_div(torch.log(p + EPS), m, reduction="batchmean")
            + F.kl_div(torch.log(q + EPS), m, reduction="batchmean")
        ).item()
    )
    assert histogram_jsd(real, generated, scale) == pytest.approx(expected, rel=1e-12)


def test_identical_samples_give_zero():
    x = _points("checkerboard", 5000, 0)
    assert histogram_kl(x, x, 2.0) == pytest.approx(0.0, abs=1e-9)
    assert histogram_jsd(x, x, 2.0) == pytest.approx(0.0, abs=1e-9)


def test_disjoint_single_cell_samples():
    # All real points in one cell, all generated points in another: P = Q = 1/a on their cell (a = cell area).
    scale = 1.0
    a = (4 * scale / 100) ** 2
    real = np.full((5000, 2), 0.01)
    generated = np.full((5000, 2), -1.01)
    kl = (1 / a) * (math.log(1 / a) - math.log(EPS)) / 100
    # KL'(M‖P): M = 1/(2a) on both cells; P's cell has log(1/a + eps), the other log(eps). Same for Q by symmetry.
    half = 1 / (2 * a)
    kl_m_p = (half * (math.log(half) - math.log(1 / a + EPS)) + half * (math.log(half) - math.log(EPS))) / 100
    assert histogram_kl(real, generated, scale) == pytest.approx(kl, rel=1e-9)
    assert histogram_jsd(real, generated, scale) == pytest.approx(kl_m_p, rel=1e-9)
    assert histogram_jsd(real, generated, scale) > 100


def test_sample_entropy_kl_is_zero_for_uniform_and_known_for_one_cell():
    scale = 2.0
    centres = -2 * scale + (np.arange(100) + 0.5) * (4 * scale / 100)
    uniform_points = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)
    assert sample_entropy_kl(uniform_points, scale) == pytest.approx(0.0, abs=1e-9)

    a, u = (4 * scale / 100) ** 2, 1 / (4 * scale) ** 2
    one_cell = np.full((5000, 2), 0.01)
    expected = (u * (math.log(u) - math.log(1 / a + EPS)) + (100**2 - 1) * u * (math.log(u) - math.log(EPS))) / 100
    assert sample_entropy_kl(one_cell, scale) == pytest.approx(expected, rel=1e-9)


def _quadratic(x: torch.Tensor) -> torch.Tensor:
    return 1.0 + x[:, 0] ** 2 + 2.0 * x[:, 1] ** 2


def test_paper_constants():
    assert PAPER_GRID == 1024 and PAPER_REAL_POINTS == 100 * 128


def test_paper_grid_weights_sum_to_the_paper_grid_and_are_ones_on_it():
    for grid_size in (1, 2, 32, 256, 1000):
        u = paper_grid_weights(grid_size)
        assert u.shape == (grid_size,) and (u > 0).all()
        assert u.sum().item() == pytest.approx(PAPER_GRID, rel=1e-12)
    torch.testing.assert_close(paper_grid_weights(PAPER_GRID), torch.ones(PAPER_GRID, dtype=torch.float64))
    # a bilinear function's sum over the paper's grid is reproduced exactly from any coarser grid
    axis = torch.linspace(-2, 2, 7, dtype=torch.float64)
    u, fine = paper_grid_weights(7), torch.linspace(-2, 2, PAPER_GRID, dtype=torch.float64)
    coarse = (1 + axis[:, None]) * (3 - axis[None, :])
    assert (u @ coarse @ u).item() == pytest.approx(((1 + fine[:, None]) * (3 - fine[None, :])).sum().item(), rel=1e-12)


def test_gnelbo_of_a_constant_neg_elbo_is_one_over_the_paper_point_count_at_any_grid_and_count():
    # Σ grid = 1024²·c and Σ real = 12,800·c whatever grid and number of real points estimate them.
    c = 3.7
    for grid_size, n_real in [(16, 10), (256, 2560), (1024, 12_800)]:
        result = gnelbo(lambda x: torch.full((len(x),), c), torch.randn(n_real, 2), 1.0, grid_size, chunk=50_000)
        assert result == pytest.approx(1 / (PAPER_GRID**2 + PAPER_REAL_POINTS), rel=1e-12)


def test_gnelbo_at_the_paper_grid_and_point_count_is_the_raw_formula():
    real, scale = torch.randn(PAPER_REAL_POINTS, 2), 2.0
    axis = torch.linspace(-2 * scale, 2 * scale, PAPER_GRID, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid_values = 1 + gx**2 + 2 * gy**2
    real_values = _quadratic(real.double())
    expected = (real_values.mean() / (grid_values.sum() + real_values.sum())).item()
    assert gnelbo(_quadratic, real, scale, PAPER_GRID, chunk=2**18) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("grid_size", [32, 256])
def test_a_coarse_grid_estimates_the_paper_grid(grid_size):
    """The coarse grid's weighted sum estimates the 1024² grid's sum: for 1 + x² + 2y² on [−4, 4]² the bilinear
    weights are within 2e-3 (grid 32) and 3e-5 (grid 256) of it; a plain (1024/G)² rescale is off by 6 % and 0.6 %."""
    real, scale = torch.randn(500, 2), 2.0
    paper = gnelbo(_quadratic, real, scale, PAPER_GRID, chunk=2**18)
    coarse = gnelbo(_quadratic, real, scale, grid_size, chunk=2**18)
    assert coarse == pytest.approx(paper, rel=3e-3 if grid_size == 32 else 1e-4)


def test_gnelbo_counts_the_real_points_as_the_paper_12800():
    """The same real points repeated 20 or 100 times (2,560 or 12,800 points) give the same gnelbo."""
    batch, scale = torch.randn(128, 2), 2.0
    twenty = gnelbo(_quadratic, batch.repeat(20, 1), scale, 64, chunk=4096)
    hundred = gnelbo(_quadratic, batch.repeat(100, 1), scale, 64, chunk=4096)
    assert twenty == pytest.approx(hundred, rel=1e-12)


def test_gnelbo_ignores_chunking_and_needs_no_gradients():
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))

    def neg_elbo(x):
        return (x**2 * weight).sum(dim=1) + 1.0

    real, scale, grid_size = torch.randn(37, 2), 2.0, 20
    assert gnelbo(neg_elbo, real, scale, grid_size, chunk=7) == pytest.approx(
        gnelbo(neg_elbo, real, scale, grid_size, chunk=10_000), rel=1e-12
    )


def test_neg_elbo_grid_orientation_rows_are_y():
    grid = neg_elbo_grid(lambda x: x[:, 0] + 10 * x[:, 1], scale=1.0, grid_size=5, chunk=3)
    assert grid.shape == (5, 5) and not grid.requires_grad
    axis = torch.linspace(-2, 2, 5, dtype=torch.float64)
    assert torch.allclose(grid, axis[None, :] + 10 * axis[:, None])


@pytest.mark.parametrize("full", [True, False])
def test_plot_2d_run_writes_a_png(tmp_path, full):
    real, generated = _points("8gaussians", 500, 0), _points("8gaussians", 500, 1)
    extra = {}
    if full:
        grid = neg_elbo_grid(lambda x: (x**2).sum(dim=1), scale=1.0, grid_size=32).numpy()
        weights = np.array([0.5, 0.3, 0.2 - 1e-4, 1e-4])  # the last is inactive (< 1/K²)
        extra = {
            "density": np.exp(-grid),
            "prior_means": np.random.default_rng(0).normal(size=(4, 2)),
            "prior_weights": weights,
            "title": "8gaussians",
        }
    path = tmp_path / "run.png"
    plot_2d_run(path, real, generated, 1.0, **extra)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
