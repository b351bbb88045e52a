"""`--betas-from STUDY`: every variant of an ablation at its own best betas, taken from finished β-grid studies.

The paper runs each configuration of its 2D table at the betas with the lowest kl in that configuration's own β
grid (one run per grid point at seed 0). A variant's grid runs are the finished runs of the named studies, in the
study's MLflow store, with the variant's dataset, budget and configuration (the CONFIGURATION keys of its resolved
config); the β point with the lowest kl (the mean, where a grid ran several seeds) wins, a tie going to the
smallest betas (at the smoke budget every kl is the same: no generated point reaches the data yet). The chosen
betas become keys of the variant, so they are params of each of its trials, and its trials' tag `betas_from` names
the study and run they came from. A variant without such a run stops the study before any trial starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from analysis.loading import search_runs
from search_spaces.space import VARIANT, StudyDesign, resolve_trial

BETAS = ("beta_rec", "beta_kl", "beta_neg")
# What makes a grid run the same configuration as a variant (with the budget): the data, the model, its prior and
# the protocol (the paper's changes how a VampPrior becomes a MoG).
CONFIGURATION = (
    "dataset",
    "model",
    "prior",
    "num_components",
    "learnable_weights",
    "prior_in_game",
    "prior_with_encoder",
    "clip",
    "responsibility_weight",
    "protocol",
)
METRIC = "kl"
TAG = "betas_from"


class BetasError(LookupError):
    """The betas cannot be taken from the grid studies; the message names the variant or study and what is wanted."""


@dataclass(frozen=True)
class Choice:
    """The betas one variant runs at, and the grid run (or runs, one per seed) they come from."""

    betas: dict[str, float]
    study: str
    run_ids: tuple[str, ...]
    kl: float

    @property
    def source(self) -> str:
        return f"{self.study}: run {', '.join(self.run_ids)} (kl {self.kl:.4g})"


def choose(d: StudyDesign, studies: Sequence[str], tracking_uri: str) -> dict[str, Choice]:
    """Each variant's lowest-kl betas from the finished runs of `studies`; BetasError for the first variant with
    none, naming it and the studies."""
    check_design(d)
    runs = grid_runs(tracking_uri, studies)
    study = d.study_config()
    choices = {}
    for variant in d.space.variants:
        config = resolve_trial(study, {VARIANT: variant, "seed": d.seeds[0]}).to_dict()
        choices[variant] = best(variant, {"budget": d.budget, **{k: config[k] for k in CONFIGURATION}}, runs, studies)
    return choices


def apply(d: StudyDesign, choices: Mapping[str, Choice]) -> StudyDesign:
    """The design with each variant's chosen betas as its keys and the `betas_from` tag on its trials."""
    return d.with_variant_keys(
        {v: c.betas for v, c in choices.items()}, {v: {TAG: c.source} for v, c in choices.items()}
    )


def check_design(d: StudyDesign) -> None:
    """Betas are chosen per variant: the space must have variants and vary nothing else but seeds."""
    where = f"--betas-from picks the betas of each variant of {d.space.name!r}"
    if not d.space.variants:
        raise BetasError(f"{where}, but the space has no variants (ablation_priors has eight)")
    if d.grid:  # a space with variants is never searched (SearchSpace.check)
        raise BetasError(f"{where}, which also varies {', '.join(d.grid)} (fix it with --set KEY=VALUE)")
    fixed = sorted(set(d.fixed) & {*BETAS, "beta_neg_multiple"})
    if fixed:
        raise BetasError(
            f"--set {', '.join(fixed)} conflicts with --betas-from (each variant takes its betas from its grid runs)"
        )


def grid_runs(tracking_uri: str, studies: Sequence[str]) -> pd.DataFrame:
    """The finished, not early-stopped runs of the studies (mlflow.search_runs' frame, plus a `study` column)."""
    from mlflow.tracking import MlflowClient

    _check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    frames = []
    for name in studies:
        experiment = client.get_experiment_by_name(name)
        if experiment is None or experiment.lifecycle_stage != "active":
            known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
            raise BetasError(
                f"--betas-from {name!r}: no study of that name in {tracking_uri} "
                f"(studies there: {', '.join(known) or 'none'})"
            )
        runs = search_runs(tracking_uri, [experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
        frames.append(runs.assign(study=name))
    runs = pd.concat(frames, ignore_index=True)
    if "tags.stopped_early" in runs:
        runs = runs[runs["tags.stopped_early"].fillna("false").str.lower() != "true"]
    return runs


def best(variant: str, wanted: Mapping[str, Any], runs: pd.DataFrame, studies: Sequence[str]) -> Choice:
    """The β point with the lowest (seed-mean) kl among the runs whose budget and CONFIGURATION are `wanted`."""
    columns = {k: ("tags." if k == "budget" else "params.") + k for k in wanted}
    metric = f"metrics.{METRIC}"
    needed = [*columns.values(), *(f"params.{b}" for b in BETAS), metric]
    match = runs.iloc[0:0]
    if all(c in runs for c in needed):
        mask = runs[metric].notna()
        for key, column in columns.items():
            mask &= runs[column].map(lambda text, value=wanted[key]: _same(text, value)).astype(bool)
        match = runs[mask]
    if match.empty:
        shown = ", ".join(f"{k}={v}" for k, v in wanted.items())
        raise BetasError(
            f"variant {variant!r}: no finished run with {METRIC} in --betas-from "
            f"{', '.join(studies)} has its configuration ({shown}){_hint(variant, wanted)}"
        )
    points = ["study", *(f"params.{b}" for b in BETAS)]
    match = match.astype({p: float for p in points[1:]})
    means = match.groupby(points)[metric].mean()  # sorted by study, then betas: a tie goes to the smallest betas
    point = means.idxmin()
    chosen = match[(match[points] == pd.Series(point, index=points)).all(axis=1)].sort_values(metric)
    return Choice(
        betas={b: float(v) for b, v in zip(BETAS, point[1:])},
        study=point[0],
        run_ids=tuple(chosen["run_id"]),
        kl=float(means[point]),
    )


def _same(text: Any, value: Any) -> bool:
    """An MLflow param string against a config value ('0' and '0.0' are the same number; 'True' is True)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text == str(value)
    try:
        return float(text) == float(value)
    except (TypeError, ValueError):
        return False


def _hint(variant: str, wanted: Mapping[str, Any]) -> str:
    from search_spaces import get

    space = get("betas_grid_vae" if wanted["model"] == "vae" else "betas_grid")
    if variant not in space.variants:
        return ""
    return (
        f"; run its grid first: python -m study.run --space {space.name} --dataset {wanted['dataset']} "
        f"--budget {wanted['budget']} --set variant={variant}"
    )


def _check_store(uri: str) -> None:
    """A missing sqlite file holds no grid study (MLflow would create an empty one)."""
    if urlparse(uri).scheme == "sqlite" and not Path(uri[len("sqlite:///") :]).is_file():
        raise BetasError(
            f"--betas-from: no MLflow store at {uri} (no database file); pass the --tracking-uri "
            "the grid studies wrote to"
        )
