"""The paper's 2D table (Table 1): eight configurations of model × prior × learnable weights (LC) × prior in the
game (IP), seeds 0–4, each at the dataset's default betas, clipping on (it takes effect with IP only), λ = 0.
A VAE with a VampPrior is never converted to a MoG."""

from search_spaces.space import SearchSpace

MOG = {"model": "sintro", "prior": "vamp_to_mog"}
VAMP = {"model": "vae", "prior": "vamp"}

SPACE = SearchSpace(
    name="ablation_priors",
    description="the paper's 2D table: VAE/S-IntroVAE x N(0,I)/VampPrior(->MoG) x LC x IP (8 configurations) x seeds",
    metric="kl",
    mode="min",
    base={"clip": "adaptive", "responsibility_weight": 0.0},
    variants={
        "vae-standard": {"model": "vae", "prior": "standard"},
        "vae-vamp": {**VAMP, "learnable_weights": False},
        "vae-vamp-LC": {**VAMP, "learnable_weights": True},
        "sintro-standard": {"model": "sintro", "prior": "standard"},
        "sintro-mog": {**MOG, "learnable_weights": False, "prior_in_game": False},
        "sintro-mog-IP": {**MOG, "learnable_weights": False, "prior_in_game": True},
        "sintro-mog-LC": {**MOG, "learnable_weights": True, "prior_in_game": False},
        "sintro-mog-LC-IP": {**MOG, "learnable_weights": True, "prior_in_game": True},
    },
    seeds=(0, 1, 2, 3, 4),
)
