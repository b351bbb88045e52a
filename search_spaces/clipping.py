"""The prior's log-variance clipping (M3): mode none / adaptive (bounds taken when the game starts) / fixed
(bounds searched), and the soft clip's sharpness. Conditional, so an Optuna define-by-run space: thresholds exist
only for `fixed`, sharpness only when something is clipped; ASHA stops weak trials early."""

from search_spaces.space import EarlyStopping, SearchSpace


def clipping_space(trial) -> None:
    clip = trial.suggest_categorical("clip", ["none", "adaptive", "fixed"])
    if clip != "none":
        trial.suggest_float("clip_sharpness", 1.0, 100.0, log=True)
    if clip == "fixed":
        trial.suggest_float("clip_logvar_min", -10.0, -1.0)
        trial.suggest_float("clip_logvar_max", -1.0, 4.0)


SPACE = SearchSpace(
    name="clipping",
    description="Optuna TPE + ASHA over clip mode none/adaptive/fixed, fixed thresholds and sharpness (conditional)",
    metric="kl",
    mode="min",
    base={"model": "sintro", "prior": "vamp_to_mog", "learnable_weights": True, "prior_in_game": True},
    search=clipping_space,
    samples=16,
    early_stopping=EarlyStopping(reduction_factor=2),
)
