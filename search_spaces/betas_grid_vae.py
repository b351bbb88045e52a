"""The paper's β grid for the plain β-VAE baselines: β_rec, β_kl ∈ {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 1.0}
(81 points at seed 0) for each of the paper's three VAE configurations (`--set variant=...` runs one), under the
paper protocol as the table; the whole run is warm-up, so there is no β_neg."""

from search_spaces.configurations import BASE, BEST_BETA, VAE
from search_spaces.space import SearchSpace

VALUES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 1.0]

SPACE = SearchSpace(
    name="betas_grid_vae",
    description="the paper's VAE grid (paper protocol): beta_rec x beta_kl in {0.05 .. 1.0} (9 x 9) x the 3 VAE "
    "variants of ablation_priors",
    metric="kl",
    mode="min",
    base=BASE,
    variants=VAE,
    grid={"beta_rec": VALUES, "beta_kl": VALUES},
    seeds=(0,),
    selection=BEST_BETA,
)
