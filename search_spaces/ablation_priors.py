"""The paper's 2D table (Table 1): eight configurations of model × prior × learnable weights (LC) × prior in the
game (IP), seeds 0–4, clipping on (it takes effect with IP only), λ = 0, under the `paper` protocol (the paper
code's quirks, e.g. its VampPrior → MoG weight reset; `--set protocol=clean` for the fixed code).

The paper runs each configuration at its own best betas from its own β grid: run `betas_grid` and `betas_grid_vae`
first, then this space with `--betas-from` those studies (study/betas_from.py). Without it, every configuration
runs at the dataset's default betas."""

from search_spaces.configurations import BASE, SINTRO, VAE
from search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="ablation_priors",
    description="the paper's 2D table (paper protocol): VAE/S-IntroVAE x N(0,I)/VampPrior(->MoG) x LC x IP "
    "(8 configurations) x seeds; --betas-from the beta grids",
    metric="kl",
    mode="min",
    base=BASE,
    variants={**VAE, **SINTRO},
    seeds=(0, 1, 2, 3, 4),
    baseline={"variant": "sintro-standard"},
)
