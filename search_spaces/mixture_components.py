"""How many mixture components the learnable prior needs, and whether its weights should learn (LC): Optuna's TPE
over K and LC with ASHA, on the paper's learnable prior (VampPrior → MoG, prior in the game, clipping)."""

from ray import tune

from search_spaces.space import EarlyStopping, SearchSpace

SPACE = SearchSpace(
    name="mixture_components",
    description="Optuna TPE + ASHA over the number of components K (1..128) and learnable weights (LC)",
    metric="kl",
    mode="min",
    base={"model": "sintro", "prior": "vamp_to_mog", "prior_in_game": True, "clip": "adaptive"},
    search={
        "num_components": tune.choice([1, 2, 4, 8, 16, 32, 64, 128]),
        "learnable_weights": tune.choice([False, True]),
    },
    samples=12,
    early_stopping=EarlyStopping(reduction_factor=2),
)
