"""python -m analysis.report --study NAME: a study's ablation tables, figures and data in one folder.

Writes into --out (default reports/NAME): runs.parquet, history.parquet, study.json (the loaded study);
ablation.md / ablation_sem.tex / ablation_std.tex / ablation.csv (the table); figures/*.png|pdf; README.md, the
index, with the trial counts (failed trials listed with their reasons) and the table. A study that does not exist
or has no finished trial is an error (exit status 2 or 1), with a message saying what the store holds.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.loading import (
    IMAGE_DATASETS,
    LOCAL_TRACKING_URI,
    Study,
    StudyNotFound,
    add_config_labels,
    default_tracking_uri,
    download_artifact,
    level_label,
    load_study,
)
from analysis.tables import (
    SELECTIONS,
    TEST_NAME,
    AblationTable,
    ablation_table,
    default_baseline,
    markdown_table,
    parse_baseline,
    select_best,
    table_metrics,
)
from core.metrics.modes import LEARNED_NEAR_MODE, learned

MAX_DENSITY_PANELS = 60


class NoFinishedRuns(RuntimeError):
    """The study exists but none of its trials finished: there is nothing to tabulate."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report", description="Ablation tables, figures and data of a study tracked in MLflow."
    )
    p.add_argument("--study", required=True, help="study name (= its MLflow experiment; see study.run --name)")
    p.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else {LOCAL_TRACKING_URI})",
    )
    p.add_argument("--out", help="output folder (default reports/STUDY)")
    p.add_argument(
        "--study-id", help="which run of a study name started more than once: an id, or 'all' (default: the latest)"
    )
    p.add_argument(
        "--baseline",
        help="row the others are compared with, e.g. 'clip=none,responsibility_weight=0' "
        "or a variant name; 'none' for no comparison (default: the space's reference "
        "configuration when the study has it)",
    )
    p.add_argument(
        "--select",
        choices=["none", *SELECTIONS],
        default="none",
        help="the paper's selection rule: per configuration keep the best beta by kl (2D) or the best "
        "lambda by FID (images) (default none)",
    )
    p.add_argument("--metrics", help="comma-separated table columns (default: the paper's for the dataset)")
    p.add_argument("--decimals", type=int, help="decimals in the tables (default: 2 for 2D, 3 for images)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the baseline test (0.05)")
    return p


def check_finished(study: Study) -> None:
    counts = study.counts()
    if counts["finished"]:
        return
    if not counts["total"]:
        raise NoFinishedRuns(
            f"study {study.name!r} has no runs yet (its MLflow experiment exists, but no trial has opened a run in it)"
        )
    reasons = study.runs.loc[study.runs["state"] == "failed", "failure_reason"].dropna().unique()[:3]
    detail = "".join(f"\n  failure: {r}" for r in reasons)
    raise NoFinishedRuns(
        f"study {study.name!r} has no finished runs yet ({counts['total']} trials: {counts['failed']} failed, "
        f"{counts['running']} running or unfinished, {counts['stopped_early']} stopped early){detail}"
    )


def build_table(
    study: Study,
    *,
    baseline: str | None = None,
    select: str = "none",
    metrics: list[str] | None = None,
    decimals: int | None = None,
    alpha: float = 0.05,
) -> AblationTable:
    """The study's ablation table (after the selection rule, if any), compared with the baseline row; a searched
    study's rows best first by its objective."""
    runs, factors, note = study.runs, study.factors, None
    if select != "none":
        runs, factors, note = select_best(runs, factors, select, levels=study.levels)
    metrics = metrics or table_metrics(study.metrics, study.dataset)
    missing = [m for m in metrics if m not in runs]
    if missing:
        raise ValueError(
            f"metric(s) {', '.join(missing)} not recorded by study {study.name!r} "
            f"(recorded: {', '.join(study.metrics)})"
        )
    if baseline is None:
        spec: Any = default_baseline(study.space, factors, runs)
    else:
        spec = None if baseline.lower() == "none" else parse_baseline(baseline)
    if decimals is None:
        decimals = 3 if study.dataset in IMAGE_DATASETS else 2
    table = ablation_table(
        runs, factors, metrics, levels=study.levels, baseline=spec, alpha=alpha, decimals=decimals, selection=note
    )
    if study.searched and f"{study.metric}_mean" in table.stats:  # sampled points have no order of their own
        table.stats = table.stats.sort_values(f"{study.metric}_mean", ascending=study.mode == "min", na_position="last")
    return table


def write_report(study: Study, out: str | Path, **table_options: Any) -> Path:
    """Everything into `out`; returns the index (README.md)."""
    check_finished(study)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = study.save(out)
    table = build_table(study, **table_options)
    (out / "ablation.md").write_text(
        f"# {study.name}: ablation table\n\n## Mean ± std/√n (the paper's convention)\n\n{table.to_markdown('sem')}"
        f"\n## Mean ± std\n\n{table.to_markdown('std')}\n## Each row against the baseline\n\n"
        f"{table.comparison_markdown()}"
    )
    (out / "ablation_sem.tex").write_text(table.to_latex("sem"))
    (out / "ablation_std.tex").write_text(table.to_latex("std"))
    (out / "ablation.csv").write_text(table.to_csv())
    figures, notes = write_figures(study, table, out)
    index = out / "README.md"
    index.write_text(index_text(study, table, files, figures, notes))
    return index


def write_figures(study: Study, table: AblationTable, out: Path) -> tuple[list[Path], list[str]]:
    """Every figure that the study's data supports, as PNG + PDF in out/figures; notes say what was skipped."""
    import matplotlib.pyplot as plt

    from analysis import figures as fg

    folder = out / "figures"
    paths: list[Path] = []
    notes: list[str] = []
    runs, factors, levels, metrics = study.runs, study.factors, study.levels, table.metrics
    varying = [f for f in factors if runs[f].map(level_label).nunique() > 1]
    for f in factors:
        hue = next((g for g in varying if g != f), None) if len(varying) == 2 else None
        paths += fg.save(fg.by_factor(runs, f, metrics, levels=levels, hue=hue), folder, f"by_{f}")
    if len(varying) >= 2:
        rows, columns = varying[:2]
        if fg.many_levels(runs[rows]) or fg.many_levels(runs[columns]):
            paths += fg.save(fg.pair_scatter(runs, rows, columns, metrics), folder, f"scatter_{rows}_x_{columns}")
        else:
            paths += fg.save(
                fg.heatmap(runs, rows, columns, metrics, levels=levels), folder, f"heatmap_{rows}_x_{columns}"
            )
    else:
        notes.append("No heatmap: the study varies fewer than two factors.")
    steps = study.history.groupby("metric")["step"].nunique()
    logged = set(steps.index[steps > 1])  # a metric logged once (gnelbo, at the end) has no curve
    for name, wanted in (
        ("learning_curves", metrics),
        ("training_losses", fg.TRAINING_METRICS),
        ("active_modes", ("active_modes",)),
    ):
        present = [m for m in wanted if m in logged]
        if present:
            fig = fg.curves(study.history, runs, present, factors, levels=levels, color_by=study.metric)
            paths += fg.save(fig, folder, name)
        else:
            notes.append(
                f"No {name.replace('_', ' ')} figure: none of {', '.join(wanted)} was logged at more than one step."
            )
    if study.dataset not in IMAGE_DATASETS:
        images = density_images(study, out / "artifacts")
        if images:
            paths += fg.save(fg.density_grid(images, runs, factors, levels=levels), folder, "densities")
        else:
            notes.append("No density grid: no finished trial has a figure.png artifact.")
    if study.searched:
        paths += importance_figure(study, folder, notes)
    plt.close("all")
    return paths, notes


def density_images(study: Study, dest: Path) -> dict[str, Path]:
    """figure.png of the finished trials (the first MAX_DENSITY_PANELS in table order), downloaded to dest."""
    done = add_config_labels(study.finished, study.factors, study.levels)
    done = done.sort_values(["config", "seed"] if "seed" in done else ["config"]).head(MAX_DENSITY_PANELS)
    images = {}
    for _, run in done.iterrows():
        path = download_artifact(study, run["run_id"], "figure.png", dest / str(run["trial_name"] or run["run_id"]))
        if path is not None:
            images[run["run_id"]] = path
    return images


def importance_figure(study: Study, folder: Path, notes: list[str]) -> list[Path]:
    from analysis import figures as fg

    done = study.finished
    if len(done) < 2 or not study.factors:
        notes.append("No hyperparameter importance: it needs at least two finished trials of a searched space.")
        return []
    try:
        scores = fg.importance(study.runs, study.factors, study.metric, study.mode)
    except (ValueError, RuntimeError) as err:  # Optuna refuses degenerate trial sets (e.g. no parameter varies)
        notes.append(f"No hyperparameter importance: Optuna could not evaluate it ({err}).")
        return []
    scores.rename_axis("factor").to_csv(folder / "importance.csv")
    return fg.save(fg.importance_plot(scores, study.metric), folder, "importance")


def index_text(
    study: Study, table: AblationTable, files: dict[str, Path], figures: list[Path], notes: list[str]
) -> str:
    counts = study.counts()
    commits = ", ".join(sorted(study.runs["git_commit"].dropna().unique())) or "unknown"
    protocols = ", ".join(sorted(study.runs["protocol"].dropna().unique())) if "protocol" in study.runs else ""
    levels = "; ".join(f"{f} ({describe_levels(study.levels.get(f, []))})" for f in study.factors)
    lines = [
        f"# Study {study.name}",
        "",
        f"- tracking URI: `{study.tracking_uri}` (experiment {', '.join(study.experiment_ids)}, "
        f"study id {study.study_id or 'none'})",
        f"- space: {study.space or 'unknown'} · dataset: {study.dataset or '?'} · budget: {study.budget or '?'} · "
        f"protocol: {protocols or '?'} · objective: {study.metric} ({study.mode}) · "
        f"{'searched (Optuna)' if study.searched else 'grid'}",
        f"- factors: {levels or 'none'} · seeds: {', '.join(map(str, study.seeds())) or 'none'}",
        f"- code: {commits}",
        f"- trials: {counts['total']} — finished {counts['finished']}, failed {counts['failed']}, "
        f"stopped early {counts['stopped_early']}, running/unfinished {counts['running']}",
    ]
    if study.other_study_ids:
        lines.append(
            f"- this experiment also holds earlier runs of the same name (study ids "
            f"{', '.join(study.other_study_ids)}); pass --study-id to read one of them, or 'all'"
        )
    lines += [
        "",
        "## What separates",
        "",
        table.separation(),
        "",
        "## Ablation table (mean ± std/√n)",
        "",
        table.to_markdown("sem"),
        f"Tables with mean ± std, the baseline comparison ({TEST_NAME.split(' (')[0]}) and LaTeX: "
        "[ablation.md](ablation.md), [ablation_sem.tex](ablation_sem.tex), [ablation_std.tex](ablation_std.tex);"
        " numbers: [ablation.csv](ablation.csv).",
        "",
    ]
    lines += not_learned_lines(study)
    unfinished = study.runs[study.runs["state"] != "finished"]
    if len(unfinished):
        labelled = add_config_labels(unfinished, study.factors, study.levels)
        listing = pd.DataFrame(
            {
                "trial": labelled["trial_name"].fillna(labelled["run_id"]),
                "configuration": labelled["config"].astype(str),
                "seed": labelled["seed"].map(level_label) if "seed" in labelled else "",
                "state": labelled["state"],
                "reason": labelled["failure_reason"].fillna("").map(lambda r: r[:200]),
            }
        )
        lines += [
            f"## Trials that did not finish ({len(unfinished)}: failed {counts['failed']}, stopped early "
            f"{counts['stopped_early']}, running/unfinished {counts['running']})",
            "",
            markdown_table(listing),
            "",
        ]
    lines += [
        "## Data",
        "",
        f"- [{files['runs'].name}]({files['runs'].name}): one row per trial (state, failure reason, the full "
        "config, final metrics)",
        f"- [{files['history'].name}]({files['history'].name}): every logged value (run_id, metric, step, value)",
        f"- [{files['meta'].name}]({files['meta'].name}): factors, levels, objective, counts",
        "",
        "## Figures (PNG and PDF)",
        "",
    ]
    for path in figures:
        if path.suffix == ".png":
            rel = path.relative_to(files["runs"].parent)
            pdf = rel.with_suffix(".pdf")
            lines += [f"### {path.stem.replace('_', ' ')}", "", f"![{path.stem}]({rel}) ([pdf]({pdf}))", ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def not_learned_lines(study: Study) -> list[str]:
    """8gaussians: the finished trials that did not learn the data (fewer than 8 modes covered, or under 80 % of
    samples within 0.1 of a mode), listed by name: a table's mean over seeds would otherwise hide them."""
    runs = study.runs[study.runs["state"] == "finished"]
    if not {"near_mode", "modes_covered"} <= set(runs.columns) or runs["near_mode"].isna().all():
        return []
    failed = runs[~runs.apply(learned, axis=1)]
    head = (
        f"## Trials that did not learn the data ({len(failed)} of {len(runs)} finished: fewer than 8 modes "
        f"covered or under {LEARNED_NEAR_MODE:.0%} of samples within 0.1 of a mode)"
    )
    if failed.empty:
        return [head, "", "Every finished trial learned all 8 modes.", ""]
    labelled = add_config_labels(failed, study.factors, study.levels)
    listing = pd.DataFrame(
        {
            "configuration": labelled["config"].astype(str),
            "seed": labelled["seed"].map(level_label) if "seed" in labelled else "",
            "modes covered": labelled["modes_covered"].map(lambda v: f"{v:.0f}"),
            "near a mode": labelled["near_mode"].map(lambda v: f"{v:.2f}"),
            "kl": labelled["kl"].map(lambda v: f"{v:.2f}"),
        }
    )
    return [head, "", markdown_table(listing), "", "They are in the table's means; read those with this list.", ""]


def describe_levels(values: list[Any], shown: int = 8) -> str:
    """'none, adaptive'; a searched parameter's many values as their count and range."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) > shown and len(numbers) == len(values):
        return f"{len(values)} values in [{level_label(min(numbers))}, {level_label(max(numbers))}]"
    return ", ".join(level_label(v) for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import matplotlib

    matplotlib.use("Agg")
    out = Path(args.out or Path("reports") / args.study)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        study = load_study(args.study, args.tracking_uri, study_id=args.study_id)
        index = write_report(
            study,
            out,
            baseline=args.baseline,
            select=args.select,
            metrics=metrics,
            decimals=args.decimals,
            alpha=args.alpha,
        )
    except StudyNotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NoFinishedRuns as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logged = log_to_study_run(study, out)
    counts = study.counts()
    print(
        f"study {study.name}: {counts['total']} trials (finished {counts['finished']}, failed {counts['failed']}, "
        f"stopped early {counts['stopped_early']}, running {counts['running']})"
    )
    print(f"report: {index}" + (f" (also in MLflow: run {logged}'s artifacts, report/)" if logged else ""))
    return 0


def log_to_study_run(study: Study, out: Path) -> str | None:
    """The report's files become artifacts (report/) of the study's parent run, beside its trials; returns the run
    id, or None for a study without one. An MLflow failure here keeps the files on disk and says so."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if study.parent_run_id is None:
        return None
    try:
        MlflowClient(tracking_uri=study.tracking_uri).log_artifacts(study.parent_run_id, str(out), "report")
    except (MlflowException, OSError) as err:
        print(f"warning: the report stays in {out}; it could not be logged to MLflow: {err}", file=sys.stderr)
        return None
    return study.parent_run_id


if __name__ == "__main__":
    sys.exit(main())
