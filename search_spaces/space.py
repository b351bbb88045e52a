"""SearchSpace: what a study varies, what it keeps fixed, what it optimises and how it searches.

A space is plain data. Ablations are factorial grids (Tune's grid search) with seeds as one more axis, where a
variant may run only some values of an axis (`narrow`: N(0,I) has one mode, so the responsibility weight changes
nothing there); tuning spaces are Tune domains or an Optuna define-by-run function, searched by OptunaSearch (TPE)
with ASHA early stopping. Every trial's configuration is `resolve_trial(study, trial)`: the dataset's budget
defaults, then the space's fixed keys (with those of the budget) and the user's `--set`, then the trial's variant
(with keys a study added to it, e.g. its own betas) and axes, then derived keys (β_neg = m·β_kl).
The study constants (`StudyDesign.study_config`) and the trial config (its variant, axes, seed) are plain data,
so a Ray worker needs no registry to rebuild the TrainConfig.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from core import metric_names
from core.config import BUDGETS, DATASETS, TOY_DATASETS, ConfigError, TrainConfig, resolve_config

MODES = ("min", "max")
VARIANT = "variant"

DefineByRun = Callable[[Any], "dict[str, Any] | None"]
# A searched parameter that is not a config key → the config keys it sets, given the trial's resolved config.
Derivation = Callable[[Any, TrainConfig], "dict[str, Any]"]


def beta_neg_from_multiple(multiple: Any, config: TrainConfig) -> dict[str, Any]:
    """β_neg = m·β_kl rounded to 3 decimals, as the paper's grid."""
    return {"beta_neg": round(float(multiple) * config.beta_kl, 3)}


@dataclass(frozen=True)
class Selection:
    """The paper's rule for this space's table (`analysis.report --select NAME`): per configuration of the other
    factors keep the level of `keys` whose finished seeds have the best mean `metric`."""

    name: str
    keys: tuple[str, ...]
    metric: str
    mode: str = "min"


@dataclass(frozen=True)
class EarlyStopping:
    """ASHA for a searched space: trials are first compared at the first evaluation after warm-up (before it the
    game has not started), then at rungs `reduction_factor` times apart, keeping the best 1/reduction_factor."""

    reduction_factor: int = 2


class SpaceError(ValueError):
    """A search space, or the user's changes to it, cannot produce valid trials."""


@dataclass(frozen=True)
class SearchSpace:
    """One named study design. `grid` and `variants` are crossed (with the seeds); `search` is sampled.

    `narrow` = {variant: {grid axis: values}}: that variant runs only those values of the axis.
    `budget_base` = {budget: {key: value}}: fixed keys at that budget only, over `base` (a protocol that needs
    something the budget leaves out).
    `derived` = {axis that is no config key: Derivation}, e.g. β_neg from its multiple of β_kl.
    `baseline`: the row every other row of the space's table is compared with (analysis.report's default).
    `selection`: the paper's selection rule for its table; `early_stopping`: ASHA for a searched space.
    """

    name: str
    description: str
    metric: str = "kl"
    mode: str = "min"
    base: Mapping[str, Any] = field(default_factory=dict)
    budget_base: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    narrow: Mapping[str, Mapping[str, Sequence[Any]]] = field(default_factory=dict)
    search: Mapping[str, Domain] | DefineByRun | None = None
    seeds: tuple[int, ...] = (0,)
    samples: int = 16
    datasets: tuple[str, ...] = TOY_DATASETS
    derived: Mapping[str, Derivation] = field(default_factory=dict)
    baseline: Mapping[str, Any] | None = None
    selection: Selection | None = None
    early_stopping: EarlyStopping | None = None

    @property
    def searched(self) -> bool:
        return self.search is not None

    @property
    def axes(self) -> tuple[str, ...]:
        """The keys a trial varies (not counting the seed): what analysis groups ablation tables by."""
        keys = ([VARIANT] if self.variants else []) + list(self.grid)
        if isinstance(self.search, Mapping):
            keys += list(self.search)
        return tuple(keys)

    def check(self) -> None:
        """Structural checks that need no dataset: metric, mode, grid or search, seeds, samples."""
        if self.metric not in metric_names.OBJECTIVES:
            raise SpaceError(
                f"space {self.name!r}: unknown metric {self.metric!r} (expected: {', '.join(metric_names.OBJECTIVES)})"
            )
        if self.mode not in MODES:
            raise SpaceError(f"space {self.name!r}: unknown mode {self.mode!r} (expected: min, max)")
        if self.searched and (self.grid or self.variants):
            raise SpaceError(f"space {self.name!r}: a space is either a grid or searched, not both")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise SpaceError(f"space {self.name!r}: seeds {self.seeds!r} must be non-negative integers")
        for key, values in self.grid.items():
            if not values:
                raise SpaceError(f"space {self.name!r}: grid axis {key!r} has no values")
        for variant, axes in self.narrow.items():
            if variant not in self.variants:
                raise SpaceError(
                    f"space {self.name!r}: narrow names an unknown variant {variant!r} "
                    f"(variants: {', '.join(self.variants) or 'none'})"
                )
            for key, values in axes.items():
                if key not in self.grid or not values or not set(values) <= set(self.grid[key]):
                    raise SpaceError(
                        f"space {self.name!r}: narrow[{variant!r}][{key!r}] = {list(values)} must be "
                        f"some of the grid axis {key!r}'s values {list(self.grid.get(key, []))}"
                    )
        unknown = sorted(set(self.budget_base) - set(BUDGETS))
        if unknown:
            raise SpaceError(
                f"space {self.name!r}: budget_base names unknown budget(s) {unknown} (expected: {', '.join(BUDGETS)})"
            )
        if self.samples < 1:
            raise SpaceError(f"space {self.name!r}: samples = {self.samples} must be at least 1")
        searched_keys = set(self.search) if isinstance(self.search, Mapping) else set()
        for key in self.derived:
            if key not in self.grid and key not in searched_keys and not callable(self.search):
                raise SpaceError(f"space {self.name!r}: derived parameter {key!r} is no axis of the space")
            if "<" in self.derived[key].__qualname__:
                raise SpaceError(
                    f"space {self.name!r}: derived parameter {key!r} needs a module-level function "
                    f"(trials import it by name), not {self.derived[key].__qualname__!r}"
                )
        if self.early_stopping is not None and not self.searched:
            raise SpaceError(f"space {self.name!r}: early_stopping (ASHA) needs a searched space")
        if self.selection is not None and self.selection.metric not in metric_names.OBJECTIVES:
            raise SpaceError(f"space {self.name!r}: selection metric {self.selection.metric!r} is unknown")
        unknown = sorted(set(self.baseline or {}) - set(self.axes))
        if unknown:
            raise SpaceError(
                f"space {self.name!r}: baseline names {unknown}, which are not axes of the space "
                f"({', '.join(self.axes) or 'none'})"
            )


@dataclass(frozen=True)
class StudyDesign:
    """A space bound to a dataset, a budget, seeds, the user's fixed overrides and a sample count.

    `variant_tags` = {variant: {tag: value}}: MLflow tags of that variant's trials (where `with_variant_keys` got
    its keys from).
    """

    space: SearchSpace
    dataset: str
    budget: str
    seeds: tuple[int, ...]
    samples: int
    fixed: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    search: Mapping[str, Domain] | DefineByRun | None
    variant_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def searched(self) -> bool:
        return self.search is not None

    @property
    def trial_count(self) -> int:
        return self.samples if self.searched else len(self.grid_points())

    @property
    def metric(self) -> str:
        """The space's metric as this study measures it: without Inception weights an FID is measured on our
        classifier's features and named fd_classifier_* (never fid)."""
        return (
            self.space.metric
            if self.fixed.get("inception_weights")
            else metric_names.without_inception(self.space.metric)
        )

    def study_config(self) -> dict[str, Any]:
        """The constant part of every trial config: how to build the TrainConfig, as plain data."""
        return {
            "space": self.space.name,
            "dataset": self.dataset,
            "budget": self.budget,
            "fixed": dict(self.fixed),
            "derived": {k: f"{f.__module__}:{f.__qualname__}" for k, f in self.space.derived.items()},
            "variants": {k: dict(v) for k, v in self.space.variants.items()},
            "variant_tags": {k: dict(v) for k, v in self.variant_tags.items()},
        }

    def with_variant_keys(
        self, keys: Mapping[str, Mapping[str, Any]], tags: Mapping[str, Mapping[str, str]]
    ) -> StudyDesign:
        """This design with more config keys for some variants (each its own betas, say), over the variant's own
        and the fixed keys, and the MLflow tags that say where they came from."""
        unknown = sorted(set(keys) - set(self.space.variants))
        if unknown:
            raise SpaceError(
                f"unknown variant(s) {unknown} of space {self.space.name!r} "
                f"(expected: {', '.join(self.space.variants) or 'none'})"
            )
        variants = {name: {**overrides, **keys.get(name, {})} for name, overrides in self.space.variants.items()}
        return dataclasses.replace(
            self, space=dataclasses.replace(self.space, variants=variants), variant_tags={**self.variant_tags, **tags}
        )

    def param_space(self) -> dict[str, Any]:
        """Tune's param_space: grid axes (with seeds) or Tune domains; the constants travel in study_config."""
        space: dict[str, Any] = {}
        if not self.searched:
            if self.space.variants:
                space[VARIANT] = tune.grid_search(list(self.space.variants))
            for key, values in self.grid.items():
                space[key] = tune.grid_search(list(values))
            space["seed"] = tune.grid_search(list(self.seeds))
        else:
            space["seed"] = self.seeds[0]
            if isinstance(self.search, Mapping):
                space.update(self.search)
        return space

    def grid_points(self) -> list[dict[str, Any]]:
        """Every trial of a grid space as its varying keys (variant, grid axes, seed), narrowed variants at their
        values only, in the order Tune numbers them: the preset points in turn, each with every seed."""
        presets = self.preset_points()
        if presets is None:
            return _tune_grid_order({**self._axes(), "seed": list(self.seeds)})
        return [{**point, "seed": seed} for point in presets for seed in self.seeds]

    def _axes(self) -> dict[str, list[Any]]:
        axes = {VARIANT: list(self.space.variants)} if self.space.variants else {}
        return {**axes, **{k: list(v) for k, v in self.grid.items()}}

    def _runs(self, point: Mapping[str, Any]) -> bool:
        narrowed = self.space.narrow.get(point.get(VARIANT), {})
        return all(point[k] in values for k, values in narrowed.items() if k in self.grid)

    def preset_points(self) -> list[dict[str, Any]] | None:
        """A narrowed grid is not a product of its axes: the points (without the seed) that Tune is to run, each
        with every seed; None when the grid is the full product."""
        if self.searched:
            return None
        points = _tune_grid_order(self._axes())
        presets = [p for p in points if self._runs(p)]
        return None if len(presets) == len(points) else presets

    def example_points(self, draws: int = 32, seed: int = 0) -> list[dict[str, Any]]:
        """Points of a searched space that validation resolves: each domain's bounds or categories, then draws."""
        if isinstance(self.search, Mapping):
            return _domain_corners(self.search) + _domain_draws(self.search, draws, seed)
        return _define_by_run_draws(self.search, draws, seed)

    def validate(self) -> list[TrainConfig]:
        """Resolve every grid point (or the searched space's corners and random draws); raise SpaceError on the
        first invalid configuration, naming the trial and the config error."""
        study = self.study_config()
        points = (
            self.grid_points() if not self.searched else [{**p, "seed": self.seeds[0]} for p in self.example_points()]
        )
        configs = []
        for point in points:
            try:
                configs.append(resolve_trial(study, point))
            except ConfigError as err:
                shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise SpaceError(
                    f"space {self.space.name!r} on {self.dataset}/{self.budget}: trial ({shown}): {err}"
                ) from None
        return configs


def design(
    space: SearchSpace,
    dataset: str,
    budget: str,
    *,
    seeds: Sequence[int] | None = None,
    samples: int | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> StudyDesign:
    """Bind a space to a dataset and budget. `fixed` (the CLI's --set) overrides the base; a fixed key that is a
    grid axis or a searched domain collapses that axis to the one value."""
    space.check()
    if dataset not in DATASETS:
        raise SpaceError(f"unknown dataset {dataset!r} (expected: {', '.join(DATASETS)})")
    if dataset not in space.datasets:
        raise SpaceError(
            f"space {space.name!r} measures {space.metric!r} and runs on {', '.join(space.datasets)} "
            f"(got dataset {dataset!r})"
        )
    seeds = tuple(space.seeds if seeds is None else seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise SpaceError(f"seeds {list(seeds)!r} must be non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise SpaceError(f"seeds {list(seeds)!r} repeat a seed")
    if space.searched and len(seeds) != 1:
        raise SpaceError(
            f"space {space.name!r} is searched by Optuna at one seed; got seeds {list(seeds)} "
            "(pass a single seed, e.g. --seeds 0)"
        )
    if samples is not None and not space.searched:
        raise SpaceError(
            f"--samples applies to searched spaces; {space.name!r} is a grid (use --seeds or --set to change its size)"
        )
    if samples is not None and samples < 1:
        raise SpaceError(f"samples = {samples} must be at least 1")
    fixed = dict(fixed or {})
    if "seed" in fixed:
        raise SpaceError("set seeds with --seeds, not --set seed=...")
    if "dataset" in fixed:
        raise SpaceError("set the dataset with --dataset, not --set dataset=...")
    if VARIANT in fixed and fixed[VARIANT] not in space.variants:
        raise SpaceError(
            f"unknown variant {fixed[VARIANT]!r} of space {space.name!r} "
            f"(expected: {', '.join(space.variants) or 'none'})"
        )
    grid = {k: v for k, v in space.grid.items() if k not in fixed}
    search = space.search
    if isinstance(search, Mapping):
        search = {k: v for k, v in search.items() if k not in fixed}
        if not search:
            raise SpaceError(f"--set fixes every searched key of {space.name!r}; nothing is left to search")
    elif callable(search):
        collapsed = sorted(set(fixed) & set(_define_by_run_keys(search)))
        if collapsed:
            raise SpaceError(f"space {space.name!r} samples {collapsed} conditionally; they cannot be fixed with --set")
    variants = space.variants
    if VARIANT in fixed:
        variants = {fixed[VARIANT]: space.variants[fixed[VARIANT]]}
    narrow = {k: v for k, v in space.narrow.items() if k in variants}
    bound = dataclasses.replace(space, variants=variants, narrow=narrow)
    fixed_config = {k: v for k, v in fixed.items() if k != VARIANT}
    fixed_config = {**space.base, **space.budget_base.get(budget, {}), **fixed_config}
    return StudyDesign(
        space=bound,
        dataset=dataset,
        budget=budget,
        seeds=seeds,
        samples=samples or space.samples,
        fixed=fixed_config,
        grid=grid,
        search=search,
    )


def _derived(study: Mapping[str, Any]) -> Mapping[str, Derivation]:
    """The study's derivations, imported from the "module:function" names its record holds (a record is JSON, and
    a space built in a notebook or a test has no entry in search_spaces)."""

    def load(reference: str) -> Derivation:
        module, _, name = reference.partition(":")
        return functools.reduce(getattr, name.split("."), importlib.import_module(module))

    return {key: load(reference) for key, reference in study["derived"].items()}


def trial_overrides(study: Mapping[str, Any], trial: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides of one trial (without the derived keys): fixed keys, then its variant, then its axes."""
    overrides = dict(study["fixed"])
    if VARIANT in trial:
        overrides.update(study["variants"][trial[VARIANT]])
    overrides.update({k: v for k, v in trial.items() if k != VARIANT and k not in study["derived"]})
    return overrides


def resolve_trial(study: Mapping[str, Any], trial: Mapping[str, Any]) -> TrainConfig:
    """The full TrainConfig of a trial: `study` = StudyDesign.study_config(), `trial` = what Tune passes to the
    trainable (variant, axes, seed); raises ConfigError."""
    overrides = trial_overrides(study, trial)
    config = resolve_config(study["dataset"], study["budget"], **overrides)
    derived = {}
    for key, derive in _derived(study).items():
        if key in trial:
            derived.update(derive(trial[key], config))
    if derived:
        config = resolve_config(study["dataset"], study["budget"], **overrides, **derived)
    return config


def searched_params(study: Mapping[str, Any], trial: Mapping[str, Any]) -> dict[str, Any]:
    """What the search chose that is not itself a config key (the variant name, β_neg's multiple)."""
    return {k: v for k, v in trial.items() if k == VARIANT or k in study["derived"]}


def variant_tags(study: Mapping[str, Any], trial: Mapping[str, Any]) -> dict[str, str]:
    """The MLflow tags of the trial's variant (e.g. where its betas came from); none for most trials."""
    return dict(study.get("variant_tags", {}).get(trial.get(VARIANT), {}))


def _tune_grid_order(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The product of grid axes as Tune's BasicVariantGenerator walks it: axes sorted by name, the first varying
    fastest (ray.tune.search.variant_generator); each point's keys in the order of `axes`."""
    names = sorted(axes, reverse=True)  # itertools.product varies its last factor fastest
    points = [dict(zip(names, values)) for values in itertools.product(*(axes[k] for k in names))]
    return [{k: point[k] for k in axes} for point in points]


def _domain_corners(search: Mapping[str, Domain]) -> list[dict[str, Any]]:
    """Each domain's extremes (every category), the other keys at their lower end."""
    lows = {k: _extremes(d)[0] for k, d in search.items()}
    points = [dict(lows)]
    for key, domain in search.items():
        points += [{**lows, key: value} for value in _extremes(domain)[1:]]
    return points


def _extremes(domain: Domain) -> list[Any]:
    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Float):
        return [domain.lower, domain.upper]
    if isinstance(domain, Integer):
        return [domain.lower, domain.upper - 1]  # Tune's randint excludes its upper bound
    raise SpaceError(f"unsupported search domain {domain!r} (use tune.uniform, loguniform, randint or choice)")


def _domain_draws(search: Mapping[str, Domain], draws: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    points = []
    for _ in range(draws):
        point = {}
        for key, domain in search.items():
            point[key] = domain.sample(random_state=rng.randrange(2**31))
        points.append(point)
    return points


def _define_by_run_draws(define: DefineByRun, draws: int, seed: int) -> list[dict[str, Any]]:
    """Run the define-by-run function on an in-memory Optuna study with a seeded random sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(draws):
        trial = study.ask()
        constants = define(trial) or {}
        points.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return points


def _define_by_run_keys(define: DefineByRun) -> set[str]:
    keys: set[str] = set()
    for point in _define_by_run_draws(define, 16, 0):
        keys |= set(point)
    return keys
