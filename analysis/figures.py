"""Figures of a study (seaborn; each saved as PNG and PDF): a metric per factor level with the seeds as points, a
heatmap of two factors, learning curves and active modes over training from the histories, the grid of a 2D
study's density figures (the trials' figure.png artifacts), and hyperparameter importance for searched studies
(Optuna's importance evaluator on trials rebuilt from the runs).

Every function takes frames and returns a matplotlib Figure (shown inline in a notebook); `save` writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis.loading import add_config_labels, level_label

MAX_HUE = 10  # more configurations than this: learning curves coloured by the final metric instead
MAX_CATEGORIES = 8  # a numeric factor with more levels than this is plotted as a scatter, not as categories
TRAINING_METRICS = ("loss_encoder", "loss_decoder", "rec", "kl_real", "kl_fake")


def save(fig: plt.Figure, folder: str | Path, name: str) -> list[Path]:
    """`name`.png and `name`.pdf in `folder`; closes the figure."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=120 if path.suffix == ".png" else None, bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(count: int, width: float = 4.0, height: float = 3.2, columns: int = 4) -> tuple[plt.Figure, list]:
    cols = max(1, min(columns, count))
    rows = max(1, -(-count // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _labels(column: pd.Series, order: list[Any]) -> tuple[pd.Series, list[str]]:
    labels = column.map(level_label)
    wanted = [level_label(v) for v in order] or sorted(labels.unique())
    return labels, [w for w in wanted if w in set(labels)]


def by_factor(
    runs: pd.DataFrame,
    factor: str,
    metrics: list[str],
    *,
    levels: dict[str, list[Any]] | None = None,
    hue: str | None = None,
) -> plt.Figure:
    """One panel per metric: its value per level of `factor`, each finished seed a point, mean ± std beside;
    `hue` splits by a second factor."""
    levels = levels or {}
    done = runs[runs["state"] == "finished"].copy()
    fig, axes = _grid(len(metrics))
    numeric = many_levels(done[factor])
    hue_order = None
    if hue is not None:
        done[hue], hue_order = _labels(done[hue], levels.get(hue, []))
    if not numeric:
        done[factor], order = _labels(done[factor], levels.get(factor, []))
    for ax, metric in zip(axes, metrics):
        if numeric:
            sns.scatterplot(data=done, x=factor, y=metric, hue=hue, hue_order=hue_order, ax=ax)
            if _wide_positive(done[factor]):
                ax.set_xscale("log")
        else:
            sns.stripplot(
                data=done,
                x=factor,
                y=metric,
                hue=hue,
                order=order,
                hue_order=hue_order,
                dodge=hue is not None,
                alpha=0.6,
                ax=ax,
                legend=False,
            )
            sns.pointplot(
                data=done,
                x=factor,
                y=metric,
                hue=hue,
                order=order,
                hue_order=hue_order,
                dodge=0.4 if hue is not None else False,
                errorbar="sd",
                linestyle="none",
                markers="D",
                capsize=0.1,
                ax=ax,
                legend=ax is axes[0] and hue is not None,
            )
            if max((len(o) for o in order), default=0) > 8:
                ax.tick_params(axis="x", labelrotation=45)
                for tick in ax.get_xticklabels():
                    tick.set_horizontalalignment("right")
        ax.set_title(metric)
    fig.suptitle(
        f"{', '.join(metrics)} by {factor}" + (f" and {hue}" if hue else "") + " (points: seeds; diamonds: mean ± std)"
    )
    return fig


def heatmap(
    runs: pd.DataFrame, rows: str, columns: str, metrics: list[str], *, levels: dict[str, list[Any]] | None = None
) -> plt.Figure:
    """One panel per metric: the mean over finished seeds (and over any other factors) for each pair of levels."""
    levels = levels or {}
    done = runs[runs["state"] == "finished"].copy()
    done[rows], row_order = _labels(done[rows], levels.get(rows, []))
    done[columns], column_order = _labels(done[columns], levels.get(columns, []))
    fig, axes = _grid(len(metrics), width=4.6, height=3.6, columns=3)
    for ax, metric in zip(axes, metrics):
        table = done.pivot_table(index=rows, columns=columns, values=metric, aggfunc="mean")
        table = table.reindex(index=row_order, columns=column_order)
        sns.heatmap(table, annot=True, fmt=".3g", cmap="viridis", ax=ax, cbar=True)
        ax.set_title(f"{metric} (mean)")
    fig.suptitle(f"{rows} × {columns}: mean over finished seeds (and over any other factors)")
    return fig


def _wide_positive(column: pd.Series) -> bool:
    """Positive values spanning two decades or more: a log axis shows them better (log-uniform searches)."""
    values = column.dropna()
    return (
        pd.api.types.is_numeric_dtype(values)
        and not pd.api.types.is_bool_dtype(values)
        and len(values) > 0
        and bool((values > 0).all())
        and values.max() / values.min() >= 100
    )


def many_levels(column: pd.Series) -> bool:
    """A numeric factor with more levels than a category axis can show (a searched, continuous parameter)."""
    return (
        pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
        and (column.nunique() > MAX_CATEGORIES)
    )


def pair_scatter(runs: pd.DataFrame, x: str, y: str, metrics: list[str]) -> plt.Figure:
    """The heatmap's counterpart for continuous factors: each finished trial at (x, y), coloured by the metric."""
    done = runs[runs["state"] == "finished"]
    fig, axes = _grid(len(metrics), width=4.6, height=3.6, columns=3)
    for ax, metric in zip(axes, metrics):
        sns.scatterplot(data=done, x=x, y=y, hue=metric, palette="viridis", s=60, ax=ax)
        if _wide_positive(done[x]):
            ax.set_xscale("log")
        if _wide_positive(done[y]):
            ax.set_yscale("log")
        ax.set_title(metric)
    fig.suptitle(f"{x} × {y}: one point a finished trial")
    return fig


def curves(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metrics: list[str],
    factors: list[str],
    *,
    levels: dict[str, list[Any]] | None = None,
    color_by: str | None = None,
) -> plt.Figure:
    """One panel per metric over training (step = iteration or epoch) of the finished and early-stopped trials:
    mean ± std over seeds per configuration; with many configurations (or continuous factors) every run is its own
    line, coloured by its final `color_by`."""
    runs = runs[runs["state"].isin(("finished", "stopped_early"))]  # a failed run's partial curve would skew the mean
    labelled = add_config_labels(runs, factors, levels or {})
    data = history[history["metric"].isin(metrics)].merge(
        labelled[["run_id", "config", *_present(runs, color_by)]], on="run_id"
    )
    many = labelled["config"].nunique() > MAX_HUE or any(many_levels(runs[f]) for f in factors)
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        part = data[data["metric"] == metric]
        if many:
            sns.lineplot(
                data=part,
                x="step",
                y="value",
                units="run_id",
                estimator=None,
                hue=color_by if color_by in part else None,
                palette="viridis",
                lw=0.8,
                ax=ax,
            )
        else:
            sns.lineplot(data=part, x="step", y="value", hue="config", errorbar="sd", marker="o", ax=ax)
        ax.set_title(metric)
        ax.set_ylabel(metric)
    handles, labels = axes[0].get_legend_handles_labels() if axes else ([], [])
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside right upper",
            fontsize="small",
            title=f"final {color_by}" if many else ", ".join(factors) or None,
        )
    fig.suptitle("over training (mean ± std over seeds)" if not many else "over training (one line a trial)")
    return fig


def _present(runs: pd.DataFrame, column: str | None) -> list[str]:
    return [column] if column and column in runs else []


def density_grid(
    images: dict[str, Path],
    runs: pd.DataFrame,
    factors: list[str],
    *,
    levels: dict[str, list[Any]] | None = None,
    columns: int = 5,
) -> plt.Figure:
    """The trials' density figures (figure.png) side by side: one row per configuration, one column per seed
    (or wrapped at `columns` panels for a study without seeds)."""
    labelled = add_config_labels(runs[runs["run_id"].isin(images)], factors, levels or {})
    labelled = labelled.sort_values(["config", "seed"] if "seed" in labelled else ["config"])
    seeds = sorted(labelled["seed"].dropna().unique()) if "seed" in labelled else []
    pictures = {run_id: plt.imread(path) for run_id, path in images.items()}
    aspect = max(p.shape[1] / p.shape[0] for p in pictures.values())  # the run figures are wide (three panels)
    width = min(7.0, 3.0 * aspect)
    by_seed = 1 < len(seeds) <= columns
    wrap = max(1, min(columns, round(16 / width)))
    cols = len(seeds) if by_seed else max(1, min(wrap, len(labelled)))
    configs = list(dict.fromkeys(labelled["config"]))
    rows = len(configs) if by_seed else max(1, -(-len(labelled) // cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, (width / aspect + 0.5) * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i, (_, run) in enumerate(labelled.iterrows()):
        r, c = (configs.index(run["config"]), seeds.index(run["seed"])) if by_seed else divmod(i, cols)
        ax = axes[r, c]
        ax.imshow(pictures[run["run_id"]])
        ax.set_title(f"{run['config']} · seed {run.get('seed', '?')}", fontsize=9)
    return fig


def importance(runs: pd.DataFrame, factors: list[str], metric: str, mode: str) -> pd.Series:
    """Hyperparameter importance of the factors for `metric`: the finished trials rebuilt as Optuna trials (a
    factor's distribution spans its observed values; None = not sampled for that trial, as a conditional
    parameter), scored by Optuna's PED-ANOVA evaluator (its default); normalised to sum to 1."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = runs[(runs["state"] == "finished") & runs[metric].notna()]
    distributions = {}
    for f in factors:
        values = done[f].dropna()
        if values.empty:
            continue
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            distributions[f] = CategoricalDistribution(sorted({level_label(v) for v in values}))
        elif pd.api.types.is_integer_dtype(values):
            distributions[f] = IntDistribution(int(values.min()), int(values.max()))
        else:
            low, high = float(values.min()), float(values.max())
            distributions[f] = FloatDistribution(low, high, log=low > 0 and high / low >= 100)
    trials = []
    for _, run in done.iterrows():
        params, dists = {}, {}
        for f, dist in distributions.items():
            value = run[f]
            if pd.isna(value):
                continue
            if isinstance(dist, CategoricalDistribution):
                value = level_label(value)
            elif isinstance(dist, IntDistribution):
                value = int(value)
            else:
                value = float(value)
            params[f], dists[f] = value, dist
        trials.append(optuna.trial.create_trial(value=float(run[metric]), params=params, distributions=dists))
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    study.add_trials(trials)
    result = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return pd.Series(result, name=f"importance for {metric}").sort_values(ascending=False)


def importance_plot(scores: pd.Series, metric: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.45 * max(1, len(scores))), layout="constrained")
    sns.barplot(x=scores.to_numpy(), y=[str(i) for i in scores.index], ax=ax, color="C0")
    ax.set_xlabel(f"importance for {metric} (Optuna's PED-ANOVA, normalised)")
    ax.set_xlim(0, max(1.0, float(np.nanmax(scores.to_numpy())) if len(scores) else 1.0))
    return fig
