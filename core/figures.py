"""Figures of a run: for 2D, real vs generated points, the learned density and the prior's modes."""

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display; must precede the pyplot import
import matplotlib.pyplot as plt

from core.priors import is_active


def plot_2d_run(
    path: str | Path,
    real: np.ndarray,
    generated: np.ndarray,
    scale: float,
    density: np.ndarray | None = None,
    prior_means: np.ndarray | None = None,
    prior_weights: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Save a PNG at `path` with one panel each for: real vs generated (n, 2) points on [−2s, 2s]²; `density`
    (a (G, G) grid ∝ exp(−negELBO), row i = y_i as from core.metrics.density.neg_elbo_grid), if given; the prior's
    (K, z) means in latent space (first two dimensions), sized and coloured by `prior_weights`, if given.
    Modes with weight < 1/K² (inactive) are drawn as red crosses."""
    lim = 2 * scale
    panels = 1 + (density is not None) + (prior_means is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4.5), squeeze=False)
    axes = list(axes[0])

    ax = axes.pop(0)
    ax.scatter(real[:, 0], real[:, 1], s=1, alpha=0.5, label="real")
    ax.scatter(generated[:, 0], generated[:, 1], s=1, alpha=0.5, label="generated")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title="samples")
    ax.legend(markerscale=8, loc="upper right")

    if density is not None:
        ax = axes.pop(0)
        ax.imshow(density, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
        ax.set(title="density exp(−negELBO)")

    if prior_means is not None:
        ax = axes.pop(0)
        k = len(prior_means)
        weights = np.full(k, 1.0 / k) if prior_weights is None else np.asarray(prior_weights)
        active = is_active(weights)
        sizes = 10 + 300 * weights / weights.max()
        modes = ax.scatter(*prior_means[active, :2].T, s=sizes[active], c=weights[active], vmin=0, vmax=weights.max())
        ax.scatter(*prior_means[~active, :2].T, s=20, c="red", marker="x")
        fig.colorbar(modes, ax=ax, label="weight")
        ax.set(aspect="equal", title=f"prior modes ({active.sum()}/{k} active)", xlabel="z1", ylabel="z2")

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
