"""Ablation tables: rows = configurations (the study's factors, seeds aggregated), columns = metrics.

Each cell is the mean over the configuration's finished seeds with either the standard deviation or the paper's
spread, std/√n, where std is np.std with ddof = 0 (population std, as the paper's code). The best mean of each
column is marked (lower or higher is better by metric; none is marked where neither is), and every row is
compared with a baseline row by Welch's two-sided t-test (unequal variances, scipy.stats.ttest_ind with
equal_var=False) on its seeds' values. Failed, unfinished and early-stopped trials are counted per row, never
averaged in. Each row shows the betas it ran at (a study may run each configuration at its own, `--betas-from`),
unless the betas are factors; the caption names the evaluation protocol (one per table, or a factor). Selection
rules (the paper's): per configuration keep the β with the lowest kl (2D) or the λ with the lowest seed-mean FID
(images). Output: Markdown, LaTeX (booktabs) and CSV (the raw numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.loading import IMAGE_DATASETS, STATES, add_config_labels, level_label, parse_param
from core import metric_names
from search_spaces import SPACES

# The spaces' selection rules by name (--select NAME): each space declares its own.
SELECTIONS = {s.selection.name: s.selection for s in SPACES.values() if s.selection is not None}
SPREADS = {"sem": "std/√n", "std": "std"}
BETA_KEYS = ("beta_rec", "beta_kl", "beta_neg")
BETAS_HEADER = "β (rec, kl, neg)"
PROTOCOL_NOTES = {"paper": "paper (reproduces the paper code's quirks)", "clean": "clean"}
TEST_NAME = "Welch's two-sided t-test (unequal variances; scipy.stats.ttest_ind, equal_var=False)"


@dataclass
class AblationTable:
    """The numbers of an ablation table (`stats`, one row per configuration) and how to print them."""

    stats: pd.DataFrame
    factors: list[str]
    metrics: list[str]
    baseline: str | None
    alpha: float = 0.05
    decimals: int = 2
    selection: str | None = None
    protocol: str | None = None
    notes: list[str] = field(default_factory=list)

    def best(self, metric: str) -> list[str]:
        """Configurations with the best mean of `metric` (ties all), or none when the metric has no direction."""
        direction = metric_names.direction(metric)
        means = self.stats[f"{metric}_mean"].dropna()
        if direction == metric_names.NEITHER or means.empty:
            return []
        target = means.min() if direction < 0 else means.max()
        return list(means.index[np.isclose(means, target, rtol=1e-12, atol=0)])

    def significant(self, metric: str) -> list[str]:
        p = self.stats[f"{metric}_p_welch"]
        return list(p.index[p < self.alpha])

    def caption(self, spread: str = "sem") -> str:
        n = self.stats["n"]
        seeds = f"n = {int(n.min())}" if n.min() == n.max() else f"n = {int(n.min())}–{int(n.max())}"
        text = (
            f"Mean ± {SPREADS[spread]} over finished seeds ({seeds}; std is np.std with ddof = 0). "
            "Bold: best mean per column (↓ lower / ↑ higher is better; unmarked columns have no direction)."
        )
        if self.baseline is not None:
            text += (
                f" * : differs from the baseline ({self.baseline}) at p < {self.alpha:g}, {TEST_NAME}; "
                "rows or metrics with fewer than 2 seeds or no variance get no test."
            )
        if self.selection:
            text += f" {self.selection}"
        if self.protocol:
            text += f" Protocol: {PROTOCOL_NOTES.get(self.protocol, self.protocol)}."
        return text

    def cells(self, spread: str = "sem", bold: tuple[str, str] = ("**", "**"), star: str = "*") -> pd.DataFrame:
        """The printed table: factor columns, n (finished seeds), failed (and stopped early / unfinished where
        there are any), then 'mean ± spread' per metric."""
        out = pd.DataFrame(index=self.stats.index)
        for f in self.factors:
            out[f] = [level_label(v) for v in self.stats[f]]
        if not self.factors:
            out["configuration"] = list(self.stats.index)
        if "betas" in self.stats:
            out[BETAS_HEADER] = list(self.stats["betas"])
        out["n"] = self.stats["n"].astype(int).astype(str)
        out["failed"] = self.stats["failed"].astype(int).astype(str)
        for column, header in (("stopped_early", "stopped early"), ("running", "unfinished")):
            if self.stats[column].any():
                out[header] = self.stats[column].astype(int).astype(str)
        for m in self.metrics:
            best, significant = set(self.best(m)), set(self.significant(m))
            scale = metric_names.scale(m)
            column = []
            for label, row in self.stats.iterrows():
                mean, spread_value = row[f"{m}_mean"], row[f"{m}_{spread}"]
                if pd.isna(mean):
                    column.append("–")
                    continue
                text = f"{mean * scale:.{self.decimals}f} ± {spread_value * scale:.{self.decimals}f}"
                if label in best:
                    text = f"{bold[0]}{text}{bold[1]}"
                if label in significant:
                    text += star
                column.append(text)
            out[metric_header(m)] = column
        return out

    def to_markdown(self, spread: str = "sem") -> str:
        cells = self.cells(spread)
        if self.baseline is not None:
            first = self.factors[0] if self.factors else "configuration"
            cells.loc[self.baseline, first] = cells.loc[self.baseline, first] + " (baseline)"
        return markdown_table(cells) + "\n\n" + self.caption(spread) + "\n"

    def separation(self) -> str:
        """One plain sentence per row that differs from the baseline beyond seed noise (Welch p < alpha), or one
        saying that nothing does: what a reader of the table should take away, stated without over-claiming."""
        if self.baseline is None:
            return "No baseline row: no configuration is tested against another."
        n = int(self.stats["n"].min())
        found = []
        for label, row in self.stats.iterrows():
            differs = [
                f"{m} {row[f'{m}_diff'] * metric_names.scale(m):+.{self.decimals}f} "
                f"(p = {_p_text(row[f'{m}_p_welch'])})"
                for m in self.metrics
                if label != self.baseline and row[f"{m}_p_welch"] < self.alpha
            ]
            if differs:
                found.append(f"- {label} differs from the baseline: " + ", ".join(differs))
        if not found:
            return (
                f"Nothing separates from the baseline ({self.baseline}) beyond seed noise: every row and metric "
                f"has Welch p ≥ {self.alpha:g} at n = {n} seeds. At this budget these configurations are not "
                "distinguishable."
            )
        return (
            f"Beyond seed noise (Welch p < {self.alpha:g}, n ≥ {n} seeds; Δ = mean − baseline mean, baseline "
            f"{self.baseline}):\n" + "\n".join(found)
        )

    def comparison_markdown(self) -> str:
        """Each row against the baseline: difference of means and Welch's p-value per metric."""
        if self.baseline is None:
            return "No baseline row: no comparison.\n"
        out = pd.DataFrame(index=self.stats.index)
        out["configuration"] = list(self.stats.index)
        for m in self.metrics:
            scale = metric_names.scale(m)
            out[metric_header(m)] = [
                "baseline"
                if label == self.baseline
                else f"Δ {row[f'{m}_diff'] * scale:+.{self.decimals}f}, p = {_p_text(row[f'{m}_p_welch'])}"
                for label, row in self.stats.iterrows()
            ]
        return markdown_table(out) + f"\n\nΔ = mean − baseline mean ({self.baseline}); p from {TEST_NAME}.\n"

    def to_latex(self, spread: str = "sem") -> str:
        cells = self.cells(spread, bold=(r"\textbf{", "}"), star="$^{*}$")
        headers = [_latex_escape(c) for c in cells.columns]
        lines = [
            f"% {self.caption(spread)}",
            r"\begin{tabular}{"
            + "l" * max(1, len(self.factors))
            + "r" * (len(cells.columns) - max(1, len(self.factors)))
            + "}",
            r"\toprule",
            " & ".join(headers) + r" \\",
            r"\midrule",
        ]
        for label, row in cells.iterrows():
            values = [v if v.startswith(r"\textbf") else _latex_escape(v) for v in row]
            values = [v.replace(" ± ", r" $\pm$ ") for v in values]
            if label == self.baseline:
                values[0] += r" (baseline)"
            lines.append(" & ".join(values) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", ""]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """Raw numbers (unscaled): factors, trial counts, and mean/std/sem/n/diff/p_welch/best per metric."""
        out = self.stats.copy()
        out.insert(0, "configuration", list(out.index))
        out["is_baseline"] = [label == self.baseline for label in out.index]
        for m in self.metrics:
            out[f"{m}_best"] = [label in self.best(m) for label in out.index]
        return out.to_csv(index=False)


def metric_header(metric: str) -> str:
    arrow = {metric_names.LOWER: " ↓", metric_names.HIGHER: " ↑"}.get(metric_names.direction(metric), "")
    scale = metric_names.scale(metric)
    return f"{metric} (×{scale:.0e})".replace("e+0", "e") + arrow if scale != 1 else metric + arrow


def table_metrics(metrics: list[str], dataset: str | None) -> list[str]:
    """The paper's columns for the dataset's kind that the study measured (FD on the classifier's features in place
    of FID without Inception weights); any other measured metrics when none of them is there."""
    wanted = metric_names.TABLE_COLUMNS["image" if dataset in IMAGE_DATASETS else "2d"]
    chosen = [metric_names.as_measured(m, metrics) for m in wanted]
    chosen = [m for m in chosen if m in metrics]
    return chosen or [m for m in metrics if not m.startswith("loss_")]


def welch(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test of mean(a) = mean(b); NaN with fewer than 2 values a side or when
    neither sample varies (the test is undefined there)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def ablation_table(
    runs: pd.DataFrame,
    factors: list[str],
    metrics: list[str],
    *,
    levels: dict[str, list[Any]] | None = None,
    baseline: dict[str, Any] | str | None = None,
    alpha: float = 0.05,
    decimals: int = 2,
    selection: str | None = None,
) -> AblationTable:
    """One row per configuration of `factors` (every trial counted; metrics over the finished ones).

    stats columns: the factors, runs, n (finished), failed, stopped_early, running, then per metric
    {m}_mean, {m}_std (np.std, ddof 0), {m}_sem (= std/√n), {m}_n, {m}_diff and {m}_p_welch (against the baseline).
    `baseline`: factor values ({'clip': 'none'}, or 'clip=none,responsibility_weight=0'), a row label (a variant
    name), or None for no comparison. Runs of both protocols (clean, paper: core/protocol.py) measure different
    things and are refused in one table unless `protocol` is one of the factors. A `betas` column ('β_rec, β_kl,
    β_neg' per row) is added unless a β is a factor.
    """
    check_one_protocol(runs, factors)
    show_betas = all(k in runs for k in BETA_KEYS) and not set(factors) & {*BETA_KEYS, "beta_neg_multiple"}
    labelled = add_config_labels(runs, factors, levels or {})
    trials = labelled.groupby("config", observed=True, sort=True)
    table = trials[factors].first() if factors else pd.DataFrame(index=trials.size().index)
    if show_betas:
        table["betas"] = trials.apply(beta_label, include_groups=False)
    table["runs"] = trials.size()
    states = pd.crosstab(labelled["config"], labelled["state"]).reindex(columns=STATES, fill_value=0)
    table["n"] = states["finished"]
    table[["failed", "stopped_early", "running"]] = states[["failed", "stopped_early", "running"]]
    measured = [m for m in metrics if m in labelled]
    finished = labelled[labelled["state"] == "finished"].groupby("config", observed=True)[measured]
    seeds = {"mean": finished.mean(), "std": finished.std(ddof=0), "n": finished.count()}
    for m in metrics:
        for stat in ("mean", "std", "n"):
            table[f"{m}_{stat}"] = seeds[stat][m].reindex(table.index) if m in measured else math.nan
        table[f"{m}_n"] = table[f"{m}_n"].fillna(0).astype(int)
        table[f"{m}_sem"] = table[f"{m}_std"] / np.sqrt(table[f"{m}_n"].where(table[f"{m}_n"] > 0))
    table = table[
        [
            *factors,
            *(["betas"] if show_betas else []),
            "runs",
            "n",
            "failed",
            "stopped_early",
            "running",
            *(f"{m}_{stat}" for m in metrics for stat in ("mean", "std", "sem", "n")),
        ]
    ]
    table.index = pd.Index([str(label) for label in table.index])
    table.index.name = None
    base_label = find_row(table, factors, baseline) if baseline is not None else None
    for m in metrics:
        if base_label is None:
            table[f"{m}_diff"] = math.nan
            table[f"{m}_p_welch"] = math.nan
            continue
        base_values = _values(labelled, base_label, m)
        table[f"{m}_diff"] = table[f"{m}_mean"] - table.loc[base_label, f"{m}_mean"]
        table[f"{m}_p_welch"] = [
            math.nan if label == base_label else welch(_values(labelled, label, m), base_values)
            for label in table.index
        ]
    protocols = runs["protocol"].dropna().unique() if "protocol" in runs and "protocol" not in factors else []
    return AblationTable(
        stats=table,
        factors=factors,
        metrics=metrics,
        baseline=base_label,
        alpha=alpha,
        decimals=decimals,
        selection=selection,
        protocol=str(protocols[0]) if len(protocols) else None,
    )


def beta_label(runs: pd.DataFrame) -> str:
    """The betas of a row's runs, 'β_rec, β_kl, β_neg' ('–' for a VAE's β_neg: it never plays the game); the
    distinct sets joined by ' | ' where the row's runs differ."""
    labels = []
    for _, run in runs.iterrows():
        neg = "–" if run.get("model") == "vae" else level_label(run["beta_neg"])
        labels.append(f"{level_label(run['beta_rec'])}, {level_label(run['beta_kl'])}, {neg}")
    return " | ".join(dict.fromkeys(labels))


def check_one_protocol(runs: pd.DataFrame, factors: list[str]) -> None:
    """Raise ValueError when the runs mix evaluation protocols that are not a factor of the table."""
    protocols = sorted(runs["protocol"].dropna().unique()) if "protocol" in runs else []
    if len(protocols) > 1 and "protocol" not in factors:
        raise ValueError(
            f"the runs mix the evaluation protocols {', '.join(protocols)}, whose numbers differ in "
            "meaning (core/protocol.py); tabulate one protocol at a time or make protocol a factor"
        )


def _values(labelled: pd.DataFrame, label: str, metric: str) -> np.ndarray:
    done = labelled[(labelled["config"] == label) & (labelled["state"] == "finished")]
    return done[metric].dropna().to_numpy(float) if metric in done else np.array([])


def parse_baseline(text: str) -> dict[str, Any] | str:
    """'clip=none,responsibility_weight=0' → {'clip': 'none', 'responsibility_weight': 0}; other text is a label."""
    if "=" not in text:
        return text
    spec = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        spec[key.strip()] = parse_param(value.strip(), key.strip())
    return spec


def find_row(table: pd.DataFrame, factors: list[str], baseline: dict[str, Any] | str) -> str:
    """The label of the row `baseline` names; keys that are not factors of the table are ignored."""
    if isinstance(baseline, str):
        if baseline in table.index:
            return baseline
        baseline = parse_baseline(baseline) if "=" in baseline else baseline
    if isinstance(baseline, dict):
        spec = {k: v for k, v in baseline.items() if k in factors}
        if spec:
            match = [
                label
                for label, row in table.iterrows()
                if all(level_label(row[k]) == level_label(parse_param(str(v), k)) for k, v in spec.items())
            ]
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                raise ValueError(
                    f"baseline {baseline} matches {len(match)} rows; name every factor ({', '.join(factors)})"
                )
    raise ValueError(f"baseline {baseline!r} is none of the table's rows (rows: {', '.join(table.index)})")


def default_baseline(space: str | None, factors: list[str], runs: pd.DataFrame) -> dict[str, Any] | None:
    """The space's own baseline row (e.g. S-IntroVAE with N(0,I); no regulariser), when the study has it;
    otherwise None (the caller may name one)."""
    spec = SPACES[space].baseline if space in SPACES else None
    if not spec:
        return None
    spec = {k: v for k, v in spec.items() if k in factors}
    if not spec:
        return None
    present = runs
    for k, v in spec.items():
        present = present[present[k].map(level_label) == level_label(v)]
    return spec if len(present) else None


def select_best(
    runs: pd.DataFrame, factors: list[str], rule: str, *, levels: dict[str, list[Any]] | None = None
) -> tuple[pd.DataFrame, list[str], str]:
    """The paper's selection: per configuration of the other factors, keep only the runs (every state) of the
    level combination of the rule's factors whose finished seeds have the best mean metric.

    rule 'beta': β_rec, β_kl, β_neg (or its multiple) by lowest kl (2D); 'lambda': responsibility_weight by
    lowest seed-mean FID (fid_gen, else fd_classifier_gen). Returns the kept runs, the table's factors (the
    configuration first, then the chosen keys) and a sentence for the caption.
    """
    if rule not in SELECTIONS:
        raise ValueError(f"unknown selection {rule!r} (expected: {', '.join(SELECTIONS)})")
    keys, metric, mode = SELECTIONS[rule].keys, SELECTIONS[rule].metric, SELECTIONS[rule].mode
    over = [k for k in keys if k in factors]
    if not over:
        raise ValueError(
            f"selection {rule!r} chooses among {', '.join(keys)}, none of which this study varies "
            f"(factors: {', '.join(factors) or 'none'})"
        )
    measured = ""
    if metric not in runs and metric_names.as_measured(metric, runs) != metric:
        metric = metric_names.as_measured(metric, runs)
        measured = (
            " (the Fréchet distance on the features of a classifier trained on the dataset: the study had no "
            "Inception weights, so this is not an FID)"
        )
    if metric not in runs:
        raise ValueError(f"selection {rule!r} needs metric {metric!r}, which the study did not record")
    config = [f for f in factors if f not in over]
    labelled = add_config_labels(runs, config, levels or {})
    labelled["_choice"] = [config_key(row, over) for _, row in labelled.iterrows()]
    keep = []
    for _, group in labelled.groupby("config", observed=True, sort=False):
        means = group[group["state"] == "finished"].groupby("_choice")[metric].mean().dropna()
        if means.empty:
            keep.append(group)  # nothing finished: keep the failures visible
            continue
        chosen = means.idxmin() if mode == "min" else means.idxmax()
        keep.append(group[group["_choice"] == chosen])
    kept = pd.concat(keep).drop(columns=["config", "_choice"])
    note = (
        f"Selection: per configuration, {', '.join(over)} chosen by the "
        f"{'lowest' if mode == 'min' else 'highest'} seed-mean {metric}{measured}."
    )
    return kept, config + over, note


def config_key(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={level_label(row[k])}" for k in keys)


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (no extra dependency: pandas' to_markdown needs tabulate)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _p_text(p: float) -> str:
    if pd.isna(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("×", r"$\times$"),
        ("β", r"$\beta$"),
        ("↓", r"$\downarrow$"),
        ("↑", r"$\uparrow$"),
        ("–", "--"),
    ):
        text = text.replace(char, escaped)
    return text
