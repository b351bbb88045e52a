"""2D density metrics, computed the way the paper's code does so that numbers compare.

P is the real and Q the generated density: normalised 2D histograms (np.histogram2d, density=True) with
`bins` × `bins` cells over [−2s, 2s]². The KL forms are torch's kl_div with reduction 'batchmean', i.e. summed over
all cells and divided by the number of rows (`bins`, 100); cells whose target density is 0 add nothing.
"""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-14
PAPER_GRID = 1024  # gnelbo's grid in the paper's code: 1024 × 1024 points over [−2s, 2s]²
PAPER_BATCHES, PAPER_BATCH_SIZE = 100, 128  # ... and its real points: 100 separately drawn batches of 128
PAPER_REAL_POINTS = PAPER_BATCHES * PAPER_BATCH_SIZE  # 12,800


def histograms(real: np.ndarray, generated: np.ndarray, scale: float, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q): np.histogram2d of the real and generated (n, 2) points, `bins` bins a side over [−2s, 2s]²,
    density=True (Σ_ij P_ij · cell area = 1 for points inside the range)."""
    extent = [[-2 * scale, 2 * scale], [-2 * scale, 2 * scale]]

    def hist(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return np.histogram2d(points[:, 0], points[:, 1], bins=bins, range=extent, density=True)[0]

    return hist(real), hist(generated)


def _kl_rows(target: np.ndarray, log_input: np.ndarray) -> float:
    """Σ_ij target_ij·(log target_ij − log_input_ij) / rows, with 0·log 0 = 0 (torch's kl_div, 'batchmean')."""
    return F.kl_div(torch.from_numpy(log_input), torch.from_numpy(target), reduction="batchmean").item()


def histogram_kl(real: np.ndarray, generated: np.ndarray, scale: float) -> float:
    """kl = Σ_ij P_ij·(log P_ij − log(Q_ij + 1e-14)) / 100, over cells with P_ij > 0 (= KL(P‖Q) up to cell area)."""
    p, q = histograms(real, generated, scale)
    return _kl_rows(p, np.log(q + EPS))


def histogram_jsd(real: np.ndarray, generated: np.ndarray, scale: float) -> float:
    """jsd = ½·(KL'(M‖P) + KL'(M‖Q)), M = ½(P + Q), KL'(M‖P) = Σ_ij M_ij·(log M_ij − log(P_ij + 1e-14)) / 100."""
    p, q = histograms(real, generated, scale)
    m = 0.5 * (p + q)
    return 0.5 * (_kl_rows(m, np.log(p + EPS)) + _kl_rows(m, np.log(q + EPS)))


def sample_entropy_kl(generated: np.ndarray, scale: float) -> float:
    """Σ_ij U·(log U − log(Q_ij + 1e-14)) / 100 with U = 1/(4s)², the uniform density over [−2s, 2s]²: the kl with
    the uniform in place of P. Large when the generated points are peaky (a low-entropy proxy)."""
    _, q = histograms(generated, generated, scale)
    uniform = np.full_like(q, 1.0 / (4 * scale) ** 2)
    return _kl_rows(uniform, np.log(q + EPS))


def _evaluate(neg_elbo: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, chunk: int) -> torch.Tensor:
    """neg_elbo over (n, 2) points in chunks of `chunk`, without gradients, as a float64 (n,) tensor."""
    with torch.no_grad():
        return torch.cat([neg_elbo(part).double().reshape(-1) for part in points.split(chunk)])


def neg_elbo_grid(
    neg_elbo: Callable[[torch.Tensor], torch.Tensor],
    scale: float,
    grid_size: int = 1024,
    chunk: int = 65536,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """negELBO on a grid_size × grid_size grid over [−2s, 2s]² (torch.linspace in x and y, both ends included),
    as a (grid_size, grid_size) float64 tensor whose entry [i, j] is at (x_j, y_i): row i is y (imshow with
    origin='lower'). The learned density is ∝ exp(−negELBO)."""
    axis = torch.linspace(-2 * scale, 2 * scale, grid_size, device=device)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    return _evaluate(neg_elbo, points, chunk).reshape(grid_size, grid_size)


def paper_grid_weights(grid_size: int, paper_grid: int = PAPER_GRID) -> torch.Tensor:
    """u (grid_size,) float64 with Σ_ij u_i·u_j·f(x_j, y_i) ≈ Σ of f over the paper_grid² grid (both linspace grids
    over [−2s, 2s]², ends included): u_k = Σ_i hat_k(t_i), the weight of coarse point k when f at each paper point
    t_i is linearly interpolated between its two coarse neighbours. Σ u = paper_grid; u = 1 when the grids agree.

    Why not a plain (paper_grid / grid_size)² rescale: both sums include the edges at full weight, so the coarse
    grid's edges stand for fewer paper points than its interior; for 1 + x² + 2y² on [−4, 4]² the plain rescale
    is off by 0.6 % at grid 256 (6 % at 32), these weights by 3e-5 (2e-3)."""
    t = torch.linspace(0, grid_size - 1, paper_grid, dtype=torch.float64)  # paper points in coarse index units
    left = t.floor().clamp(0, max(grid_size - 2, 0)).long()
    right_share = t - left
    u = torch.zeros(grid_size + 1, dtype=torch.float64)  # one spare slot: a grid of 1 has no right neighbour
    u.index_add_(0, left, 1 - right_share).index_add_(0, left + 1, right_share)
    return u[:grid_size]


def gnelbo(
    neg_elbo: Callable[[torch.Tensor], torch.Tensor],
    real_points: torch.Tensor,
    scale: float,
    grid_size: int = PAPER_GRID,
    chunk: int = 65536,
) -> float:
    """The paper's gnelbo, estimated from any grid and any number of real points:

        gnelbo = mean_{x real} negELBO(x) / (Σ_{g in 1024² grid} negELBO(g) + Σ_{12,800 real x} negELBO(x)),

    the 1024 × 1024 grid over [−2s, 2s]² and the 12,800 real points (100 batches of 128) being the paper's. Both
    sums grow with their number of terms, so a coarser grid or fewer points alone would change the number's scale
    (grid 256 with 2,560 points: ~16× the paper's). Here the grid sum is Σ_ij u_i·u_j·negELBO(x_j, y_i) over the
    grid_size² grid with `paper_grid_weights` u (the sum over the 1024² grid of the coarse grid's bilinear
    interpolant), and the real sum is 12,800 · mean_{x real} negELBO(x). With grid_size = 1024 and 12,800 real
    points this is the paper's formula exactly.

    `neg_elbo` maps (n, 2) points to their (n,) negELBO (rec(x, D(mu)) + MC KL, β = 1). The paper's tables print
    gnelbo × 1e7."""
    grid = neg_elbo_grid(neg_elbo, scale, grid_size, chunk, device=real_points.device).cpu()
    u = paper_grid_weights(grid_size)
    real_mean = _evaluate(neg_elbo, real_points, chunk).mean().cpu()
    return (real_mean / (u @ grid @ u + PAPER_REAL_POINTS * real_mean)).item()
