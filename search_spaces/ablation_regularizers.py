"""The learnable MoG's two regularisers crossed: adaptive variance clipping (M3) on or off × the responsibility
regulariser's weight λ ∈ {0, 1, 10, 100} (M4), with seeds as an axis. The project's default study."""

from search_spaces.space import SearchSpace

SPACE = SearchSpace(
    name="ablation_regularizers",
    description="learnable MoG (VampPrior->MoG, LC, IP): clip none/adaptive x responsibility weight 0/1/10/100 x seeds",
    metric="kl",
    mode="min",
    base={"model": "sintro", "prior": "vamp_to_mog", "learnable_weights": True, "prior_in_game": True},
    grid={"clip": ["none", "adaptive"], "responsibility_weight": [0.0, 1.0, 10.0, 100.0]},
    seeds=(0,),
    baseline={"clip": "none", "responsibility_weight": 0.0},
)
