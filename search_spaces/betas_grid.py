"""The paper's β grid for S-IntroVAE, run once per point at seed 0, best = lowest kl:
β_rec ∈ {0.05, 0.2, 0.3, 0.4, 0.8, 1.0} × β_kl ∈ {0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0} × β_neg = m·β_kl, m ∈ 1..5
(rounded to 3 decimals): 210 points for each of the paper's five S-IntroVAE configurations (`--set variant=...`
runs one), under the paper protocol as the table, so that `ablation_priors --betas-from` finds each
configuration's own best betas. The VAE's grid is `betas_grid_vae`."""

from search_spaces.configurations import BASE, BEST_BETA, SINTRO
from search_spaces.space import SearchSpace, beta_neg_from_multiple

SPACE = SearchSpace(
    name="betas_grid",
    description="the paper's S-IntroVAE grid (paper protocol): beta_rec (6) x beta_kl (7) x beta_neg = m * beta_kl, "
    "m in 1..5, x the 5 S-IntroVAE variants of ablation_priors",
    metric="kl",
    mode="min",
    base=BASE,
    variants=SINTRO,
    grid={
        "beta_rec": [0.05, 0.2, 0.3, 0.4, 0.8, 1.0],
        "beta_kl": [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0],
        "beta_neg_multiple": [1, 2, 3, 4, 5],
    },
    seeds=(0,),
    derived={"beta_neg_multiple": beta_neg_from_multiple},
    selection=BEST_BETA,
)
