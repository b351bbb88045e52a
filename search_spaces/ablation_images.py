"""The paper's image ablation (its Tables 2 and 5): S-IntroVAE with N(0,I), or with the learnable prior
(VampPrior → MoG) at K ∈ {10, 100} × learnable weights (LC) × prior in the game (IP), each at the responsibility
weight λ ∈ {0, 1, 10, 100}, clipping on, seeds 0–2. N(0,I) runs at λ = 0 only: with one mode the regulariser is
constant. The paper keeps, per configuration, the λ with the lowest seed-mean FID (`analysis.report --select
lambda`); without Inception weights the study measures fd_classifier_gen instead, and says so.

It runs the `paper` protocol, which reproduces the paper's reported numbers (the lowest FID over the checkpoints at
`metric_epochs`, networks in train mode; `--set protocol=clean` scores the final model in eval mode). That protocol
needs a scored checkpoint, which the smoke budget has none of: at smoke the space scores epoch 1."""

from core.config import IMAGE_DATASETS
from search_spaces.space import SearchSpace, Selection

LAMBDAS = [0.0, 1.0, 10.0, 100.0]


def _mog(k: int, lc: bool, ip: bool) -> tuple[str, dict]:
    name = f"mog-K{k}" + ("-LC" if lc else "") + ("-IP" if ip else "")
    return name, {"prior": "vamp_to_mog", "num_components": k, "learnable_weights": lc, "prior_in_game": ip}


SPACE = SearchSpace(
    name="ablation_images",
    description="the paper's image tables (paper protocol): N(0,I) | VampPrior->MoG K 10/100 x LC x IP, "
    "x lambda 0/1/10/100, x seeds",
    metric="fid_gen",
    mode="min",
    base={"model": "sintro", "clip": "adaptive", "protocol": "paper"},
    budget_base={"smoke": {"metric_epochs": [1]}, "demo": {"metric_epochs": [1]}},
    variants={
        "standard": {"prior": "standard"},
        **dict(_mog(k, lc, ip) for k in (10, 100) for lc in (False, True) for ip in (False, True)),
    },
    grid={"responsibility_weight": LAMBDAS},
    narrow={"standard": {"responsibility_weight": [0.0]}},
    seeds=(0, 1, 2),
    baseline={"variant": "standard"},
    # the paper keeps, per configuration, the λ with the lowest seed-mean FID (gen)
    selection=Selection("lambda", ("responsibility_weight",), "fid_gen"),
    datasets=IMAGE_DATASETS,
)
