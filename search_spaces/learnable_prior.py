"""The paper's central comparison and the project's default study: S-IntroVAE with N(0,I) against S-IntroVAE with
the learnable prior (VampPrior → MoG with K = 64, learnable weights, prior in the game, adaptive variance clipping),
λ = 0, seeds 0–2, each at the dataset's default betas."""

from search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="learnable_prior",
    description="S-IntroVAE: N(0,I) vs the learnable prior (VampPrior->MoG, LC, IP, adaptive clipping) x seeds 0-2",
    metric="kl",
    mode="min",
    base={"model": "sintro", "clip": "adaptive", "responsibility_weight": 0.0},
    variants={
        "standard": {"prior": "standard"},
        "learnable": {"prior": "vamp_to_mog", "learnable_weights": True, "prior_in_game": True},
    },
    seeds=(0, 1, 2),
    baseline={"variant": "standard"},
)
