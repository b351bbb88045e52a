"""Tune S-IntroVAE's loss weights for a dataset: β_rec, β_kl and β_neg = m·β_kl (m the searched multiple, as in
the paper's grid), by Optuna's TPE with ASHA stopping the weak trials early."""

from ray import tune

from search_spaces.space import EarlyStopping, SearchSpace, beta_neg_from_multiple

SPACE = SearchSpace(
    name="betas",
    description="Optuna TPE + ASHA over beta_rec, beta_kl (log-uniform 0.05..1) and beta_neg = m * beta_kl, m in 1..5",
    metric="kl",
    mode="min",
    base={"model": "sintro"},
    search={
        "beta_rec": tune.loguniform(0.05, 1.0),
        "beta_kl": tune.loguniform(0.05, 1.0),
        "beta_neg_multiple": tune.choice([1, 2, 3, 4, 5]),
    },
    samples=24,
    derived={"beta_neg_multiple": beta_neg_from_multiple},
    early_stopping=EarlyStopping(reduction_factor=2),
)
