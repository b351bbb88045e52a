"""The paper's β grid for the plain β-VAE baseline: β_rec, β_kl ∈ {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 1.0}
(81 trials at seed 0); the whole run is warm-up, so there is no β_neg."""

from search_spaces.space import SearchSpace

VALUES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 1.0]

SPACE = SearchSpace(
    name="betas_grid_vae",
    description="the paper's VAE grid: beta_rec x beta_kl in {0.05 .. 1.0} (9 x 9 = 81 trials)",
    metric="kl",
    mode="min",
    base={"model": "vae"},
    grid={"beta_rec": VALUES, "beta_kl": VALUES},
    seeds=(0,),
)
