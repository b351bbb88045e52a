"""A study's MLflow runs as two tidy pandas frames, saved as parquet.

`runs`: one row per trial, failed and unfinished ones included: identity (run_id, trial_id, trial_name), `state`
(finished | stopped_early | failed | running), failure_reason, device_used (the tag; `device` is the config
key), betas_from (the grid run a trial's betas came from, if any), the full resolved config as typed columns (the
study's factors among them), and the final value of every metric (MLflow's latest value: the largest step; a
metric named like a param would get the column NAME_metric; core/metric_names.py keeps metric names and config
keys apart, so none does).
`history`: one row per logged value: run_id, trial_id, metric, step (= iteration or epoch), value, timestamp.
`runs` is built from `mlflow.search_runs`' pandas frame (the latest value of each metric); `history` from each
metric's logged history, which search_runs does not return.

The layout read here is the one study/tracking.py writes: one experiment per study, one run per trial, params =
the resolved config (plus a grid's `variant` and a searched `beta_neg_multiple`), tags space / study / study_id /
trial_id / trial_name / git_commit / device / failure_reason / stopped_early / betas_from. The factors are the
search space's axes that vary in the study; for a space this code does not know, they are inferred from the runs
(the params that vary, excluding the seed and the params that other varying params determine).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from core import metric_names
from core.config import IMAGE_DATASETS, UNIT_NAMES, ConfigError
from core.overrides import infer_value, parse_value

LOCAL_TRACKING_URI = "sqlite:///mlruns.db"
STUDY_ROLE_TAG = "priorstudy.role"  # "study" on a study's parent run; its trials' runs nest under it


def default_tracking_uri() -> str:
    """Where a study tracks unless told: MLflow's own MLFLOW_TRACKING_URI when set, else a sqlite file in the working
    folder (the one default of study.run, analysis.report and the study's tracking code)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_TRACKING_URI


STATES = ("finished", "stopped_early", "failed", "running")
# Reported with every evaluation but not measurements of the model.
BOOKKEEPING_METRICS = (*UNIT_NAMES, "step", "in_game")
RUNS_FILE, HISTORY_FILE, META_FILE = "runs.parquet", "history.parquet", "study.json"


class StudyNotFound(LookupError):
    """No study of that name in the tracking store (or no store at that URI); the message lists what exists."""


@dataclass
class Study:
    """A study's runs and histories with what analysis needs to know about its design."""

    name: str
    tracking_uri: str
    experiment_ids: list[str]
    study_id: str | None  # the study_id tag read ('all': every one; None: the runs carry none)
    space: str | None
    dataset: str | None
    budget: str | None
    metric: str
    mode: str
    searched: bool
    factors: list[str]
    levels: dict[str, list[Any]]
    params: list[str]
    metrics: list[str]
    runs: pd.DataFrame
    history: pd.DataFrame
    other_study_ids: list[str] = field(default_factory=list)
    parent_run_id: str | None = None  # the study's own run (none for studies tracked before parent runs)

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["state"] == "finished"]

    def counts(self) -> dict[str, int]:
        """Trials per state (all four states, zeros included) and the total."""
        counts = {state: int((self.runs["state"] == state).sum()) for state in STATES}
        return {"total": len(self.runs), **counts}

    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.runs["seed"].dropna().unique()) if "seed" in self.runs else []

    def meta(self) -> dict[str, Any]:
        """Everything but the frames, as JSON-able data (study.json beside the parquet files)."""
        return {
            "name": self.name,
            "tracking_uri": self.tracking_uri,
            "experiment_ids": self.experiment_ids,
            "study_id": self.study_id,
            "other_study_ids": self.other_study_ids,
            "space": self.space,
            "dataset": self.dataset,
            "budget": self.budget,
            "metric": self.metric,
            "mode": self.mode,
            "searched": self.searched,
            "factors": self.factors,
            "levels": {k: [_jsonable(v) for v in vals] for k, vals in self.levels.items()},
            "params": self.params,
            "metrics": self.metrics,
            "counts": self.counts(),
            "seeds": self.seeds(),
        }

    def save(self, folder: str | Path) -> dict[str, Path]:
        """runs.parquet, history.parquet and study.json in `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"runs": folder / RUNS_FILE, "history": folder / HISTORY_FILE, "meta": folder / META_FILE}
        self.runs.to_parquet(paths["runs"], index=False)
        self.history.to_parquet(paths["history"], index=False)
        paths["meta"].write_text(json.dumps(self.meta(), indent=2))
        return paths

    @classmethod
    def from_folder(cls, folder: str | Path) -> Study:
        """A study saved by `save`, without the tracking store."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        meta.pop("counts")
        meta.pop("seeds")
        return cls(**meta, runs=pd.read_parquet(folder / RUNS_FILE), history=pd.read_parquet(folder / HISTORY_FILE))


def load_study(
    name: str,
    tracking_uri: str | None = None,
    *,
    study_id: str | None = None,
    history: bool = True,
) -> Study:
    """Read the study `name` (its MLflow experiment, or the runs tagged study=`name`) from `tracking_uri`.

    An experiment reused by a study started again under the same name holds runs of several studies (tag
    study_id): the latest one is read unless `study_id` names another, or is "all".
    """
    from mlflow.tracking import MlflowClient

    tracking_uri = tracking_uri or default_tracking_uri()
    _check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_ids = _experiments_of(client, name, tracking_uri)
    raw = search_runs(tracking_uri, experiment_ids)
    raw = raw[_tag(raw, "study").fillna(name) == name]  # runs of other studies sharing an experiment left out
    chosen, others = _choose_study_id(raw, study_id, name)
    if chosen != "all":
        raw = raw[_tag(raw, "study_id").fillna("") == chosen]
    is_parent = _tag(raw, STUDY_ROLE_TAG) == "study"
    parents = raw.loc[is_parent, "run_id"].tolist()
    raw = raw[~is_parent].reset_index(drop=True)

    tags = _common_tags(raw)
    space = _space(tags.get("space"))
    runs, params, metric_columns = _runs_frame(raw)
    dataset = tags.get("dataset") or _single(runs, "dataset")
    metric, mode = _objective(space, dataset, metric_columns)
    searched = bool(space.searched) if space is not None else _looks_searched(runs, params)
    factors, levels = _factors(runs, params, space)
    if factors:
        runs = runs.sort_values(
            factors + (["seed"] if "seed" in runs else []),
            key=lambda col: _sort_key(col, levels.get(col.name)),
            kind="stable",
        )
        runs = runs.reset_index(drop=True)
    hist = _history_frame(client, raw) if history else _empty_history()
    return Study(
        name=name,
        tracking_uri=tracking_uri,
        experiment_ids=experiment_ids,
        study_id=chosen or None,
        space=tags.get("space"),
        dataset=dataset,
        budget=tags.get("budget") or _single(runs, "budget"),
        metric=metric,
        mode=mode,
        searched=searched,
        factors=factors,
        levels=levels,
        params=params,
        metrics=_ordered_metrics(metric_columns),
        runs=runs,
        history=hist,
        other_study_ids=others,
        parent_run_id=parents[0] if len(parents) == 1 else None,
    )


def download_artifact(study: Study, run_id: str, path: str, dest: str | Path) -> Path | None:
    """One artifact of one run (e.g. figure.png) into `dest`, or None when the run has none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=study.tracking_uri)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if path not in {a.path for a in client.list_artifacts(run_id)}:
            return None
        return Path(client.download_artifacts(run_id, path, dst_path=str(dest)))
    except (MlflowException, OSError):
        return None


def parse_param(text: Any, key: str | None = None) -> Any:
    """An MLflow param string back to its value, typed as `--set` types that config key (core.overrides), so
    'None' → None, 'True' → True, '3' → 3, '0.5' → 0.5; keys that are not config keys by their look."""
    if key is not None:
        try:
            return parse_value(key, text)
        except ConfigError:  # a value the key never takes (an older run's): keep what it looks like
            pass
    return infer_value(text)


def typed_column(values: list[Any], key: str | None = None) -> pd.Series:
    """One dtype a column: integers (nullable Int64), numbers (float64, '0' and '0.0' the same level),
    booleans (nullable), or the original strings when the values mix kinds."""
    parsed = [parse_param(v, key) for v in values]
    kinds = {type(v) for v in parsed if v is not None}
    if not kinds:
        return pd.Series([None] * len(values), dtype=object)
    if kinds == {bool}:
        return pd.Series(parsed, dtype="boolean")
    if kinds == {int}:
        return pd.Series(parsed, dtype="Int64")
    if kinds <= {int, float}:
        return pd.Series([np.nan if v is None else float(v) for v in parsed], dtype="float64")
    return pd.Series([None if v is None else str(v) for v in values], dtype=object)


def level_label(value: Any) -> str:
    """A factor level as a short label: 10.0 → '10', 0.0002 → '0.0002', True → 'True', None → 'None'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "None"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def config_label(row: pd.Series | dict[str, Any], factors: list[str]) -> str:
    """'clip=none, responsibility_weight=0'; a variant alone is its name; no factors: 'all trials'."""
    if not factors:
        return "all trials"
    if factors == ["variant"]:
        return level_label(row["variant"])
    return ", ".join(f"{f}={level_label(row[f])}" for f in factors)


def add_config_labels(runs: pd.DataFrame, factors: list[str], levels: dict[str, list[Any]]) -> pd.DataFrame:
    """`runs` with a `config` column: an ordered categorical of the configurations, in the factors' level order."""
    out = runs.copy()
    labels = [config_label(row, factors) for _, row in out.iterrows()]
    order = list(dict.fromkeys(labels))
    if factors:
        ranked = out.sort_values(factors, key=lambda col: _sort_key(col, levels.get(col.name)), kind="stable")
        order = list(dict.fromkeys(config_label(row, factors) for _, row in ranked.iterrows()))
    out["config"] = pd.Categorical(labels, categories=order, ordered=True)
    return out


def _check_store(uri: str) -> None:
    """A missing sqlite file is an error, not a new empty store (MLflow would create one)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path or not Path(path).is_file():
            raise StudyNotFound(
                f"no MLflow store at {uri} (no database file {path or '?'}); pass the store the "
                "study wrote to with --tracking-uri"
            )
    elif parsed.scheme == "file" and not Path(parsed.path).is_dir():
        raise StudyNotFound(f"no MLflow store at {uri} (folder {parsed.path} does not exist)")


def _experiments_of(client, name: str, uri: str) -> list[str]:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "active":
        return [experiment.experiment_id]
    experiments = client.search_experiments()
    tagged = [
        e.experiment_id
        for e in experiments
        if client.search_runs([e.experiment_id], filter_string=f"tags.study = '{_quote(name)}'", max_results=1)
    ]
    if tagged:
        return tagged
    known = sorted(e.name for e in experiments if e.name != "Default")
    raise StudyNotFound(f"no study named {name!r} in {uri} (studies there: {', '.join(known) or 'none'})")


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def search_runs(tracking_uri: str, experiment_ids: list[str], filter_string: str = "") -> pd.DataFrame:
    """`mlflow.search_runs`' frame (run_id, status, start_time, end_time, params.*, metrics.*, tags.*; every page)
    from the store at `tracking_uri`. search_runs reads the global tracking URI, and set_tracking_uri exports it to
    MLFLOW_TRACKING_URI, where it would become a later study's default store: both are put back after."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.search_runs(experiment_ids, filter_string=filter_string)
    finally:
        mlflow.set_tracking_uri(previous)  # None: unset again


def _tag(raw: pd.DataFrame, key: str) -> pd.Series:
    """The tag `key` of every run (missing where a run lacks it, or no run has it)."""
    return raw.get(f"tags.{key}", pd.Series([None] * len(raw), index=raw.index, dtype=object))


def _choose_study_id(raw: pd.DataFrame, wanted: str | None, name: str) -> tuple[str, list[str]]:
    """The study_id to read (default: the one whose first run started last) and the others present."""
    first_start = raw.groupby(_tag(raw, "study_id").fillna(""))["start_time"].min().sort_values(kind="stable")
    ids = list(first_start.index)
    if wanted == "all":
        return "all", []
    if wanted is not None:
        if wanted not in ids:
            raise StudyNotFound(
                f"study {name!r} has no runs with study_id {wanted!r} (study ids: {', '.join(ids) or 'none'})"
            )
        return wanted, [i for i in ids if i != wanted]
    if not ids:
        return "", []
    return ids[-1], ids[:-1]


def _common_tags(raw: pd.DataFrame) -> dict[str, str]:
    """Tags that name the study (the same on all its runs; the first run's value where they differ)."""
    present = {key: _tag(raw, key).dropna() for key in ("space", "study", "dataset", "budget")}
    return {key: values.iloc[0] for key, values in present.items() if len(values)}


def _space(name: str | None):
    """The search space the study ran, when this checkout knows it (importing it needs Ray; its absence is fine)."""
    if not name:
        return None
    try:
        from search_spaces import get

        return get(name)
    except (ImportError, LookupError, ValueError):
        return None


def _runs_frame(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """search_runs' frame as the `runs` frame: identity and state columns, typed params, final metric values."""
    params = sorted(c.removeprefix("params.") for c in raw if c.startswith("params."))
    metric_keys = sorted(c.removeprefix("metrics.") for c in raw if c.startswith("metrics."))
    stopped = _tag(raw, "stopped_early").fillna("false").astype(str).str.lower() == "true"
    status = raw["status"].astype(object)
    state = np.select(
        [(status == "FINISHED") & stopped, status == "FINISHED", status.isin(["FAILED", "KILLED"])],
        ["stopped_early", "finished", "failed"],
        "running",
    )
    start, end = (pd.to_datetime(raw[c], utc=True) for c in ("start_time", "end_time"))
    frame = pd.DataFrame(
        {
            "run_id": raw["run_id"].astype(object),
            "trial_id": _tag(raw, "trial_id"),
            "trial_name": _tag(raw, "trial_name").fillna(_tag(raw, "mlflow.runName")),
            "study_id": _tag(raw, "study_id"),
            "state": pd.Series(state, index=raw.index, dtype=object),
            "mlflow_status": status,
            "failure_reason": _tag(raw, "failure_reason").astype(object),
            "stopped_early": stopped,
            "start_time": start,
            "end_time": end,
            "duration_s": (end - start).dt.total_seconds(),
            "git_commit": _tag(raw, "git_commit"),
            "device_used": _tag(raw, "device"),
            "betas_from": _tag(raw, "betas_from").astype(object),
        },
        index=raw.index,
    )
    columns = {p: typed_column(raw[f"params.{p}"].fillna("None").tolist(), p) for p in params}
    metric_columns = {}
    for key in metric_keys:
        column = key if key not in columns and key not in frame else f"{key}_metric"
        metric_columns[column] = raw[f"metrics.{key}"].astype("float64")
    frame = pd.concat([frame, pd.DataFrame(columns, index=raw.index), pd.DataFrame(metric_columns)], axis=1)
    return frame, params, list(metric_columns)


def _history_frame(client, raw: pd.DataFrame) -> pd.DataFrame:
    """Every logged value of every metric of the runs (search_runs gives only the latest)."""
    rows = []
    metric_columns = [c for c in raw if c.startswith("metrics.")]
    for _, run in raw.iterrows():
        for column in metric_columns:
            if pd.notna(run[column]):
                key = column.removeprefix("metrics.")
                for m in client.get_metric_history(run["run_id"], key):
                    rows.append((run["run_id"], run.get("tags.trial_id"), key, m.step, m.value, m.timestamp))
    if not rows:
        return _empty_history()
    hist = pd.DataFrame(rows, columns=["run_id", "trial_id", "metric", "step", "value", "timestamp"])
    hist["timestamp"] = pd.to_datetime(hist["timestamp"], unit="ms", utc=True)
    return hist.sort_values(["run_id", "metric", "step", "timestamp"], kind="stable").reset_index(drop=True)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": pd.Series(dtype=object),
            "trial_id": pd.Series(dtype=object),
            "metric": pd.Series(dtype=object),
            "step": pd.Series(dtype="int64"),
            "value": pd.Series(dtype="float64"),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def _single(runs: pd.DataFrame, column: str) -> str | None:
    if column not in runs:
        return None
    values = runs[column].dropna().unique()
    return str(values[0]) if len(values) == 1 else None


def _objective(space, dataset: str | None, metric_columns: list[str]) -> tuple[str, str]:
    """The space's metric and mode (its FID measured as fd_classifier where the study had no Inception weights);
    without a known space, kl (2D) or FID (images), minimised."""
    if space is not None:
        return metric_names.as_measured(space.metric, metric_columns), space.mode
    return metric_names.as_measured("fid_gen" if dataset in IMAGE_DATASETS else "kl", metric_columns), "min"


def _ordered_metrics(columns: list[str]) -> list[str]:
    return metric_names.ordered([c for c in columns if c not in BOOKKEEPING_METRICS])


def _varying(runs: pd.DataFrame, params: list[str]) -> list[str]:
    return [p for p in params if p != "seed" and runs[p].astype(str).nunique() > 1]


def _factors(runs: pd.DataFrame, params: list[str], space) -> tuple[list[str], dict[str, list[Any]]]:
    """The space's axes that vary in this study (all its axes if none varies); inferred when the space is unknown
    or names no axes (an Optuna define-by-run space): see `infer_factors`."""
    varying = _varying(runs, params)
    axes = [a for a in (space.axes if space is not None else ()) if a in runs]
    factors = [a for a in axes if a in varying] or axes
    if not factors:
        factors = infer_factors(runs, params)
    levels = {f: _levels(runs[f], _space_levels(space, f)) for f in factors}
    return factors, levels


def infer_factors(runs: pd.DataFrame, params: list[str]) -> list[str]:
    """The params that vary across the runs (not the seed), minus those the ones already kept determine:
    `variant` first, then by name; a candidate is kept when some group of the kept factors has several of its
    values (so a variant's model, prior and betas are not factors of their own)."""
    varying = _varying(runs, params)
    candidates = (["variant"] if "variant" in varying else []) + [p for p in varying if p != "variant"]
    kept: list[str] = []
    for candidate in candidates:
        if not kept or (runs.astype({c: str for c in [*kept, candidate]}).groupby(kept)[candidate].nunique().max() > 1):
            kept.append(candidate)
    return kept


def _space_levels(space, factor: str) -> list[Any]:
    """A grid axis's values (or the variant names) in the space's order, parsed as MLflow params are."""
    if space is None:
        return []
    if factor == "variant":
        return list(space.variants)
    return [parse_param(str(v), factor) for v in space.grid.get(factor, ())]


def _levels(column: pd.Series, order: list[Any]) -> list[Any]:
    """The values present, in the space's order, then the others sorted (None last)."""
    present = [_plain(v) for v in column.dropna().unique()]
    ordered = [v for v in order if any(_same(v, p) for p in present)]
    rest = [p for p in present if not any(_same(p, v) for v in ordered)]
    rest.sort(key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return ordered + rest + ([None] if column.isna().any() else [])


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _sort_key(column: pd.Series, order: list[Any] | None) -> pd.Series:
    if not order:
        return column
    return column.map(lambda v: next((i for i, o in enumerate(order) if _same(o, v)), len(order)))


def _looks_searched(runs: pd.DataFrame, params: list[str]) -> bool:
    """Without the space: a sampler draws continuous values, so some numeric param takes a new value per run."""
    for p in _varying(runs, params):
        column = runs[p]
        if column.dtype == "float64" and len(runs) > 2 and column.nunique() == len(runs):
            return True
    return False


def _jsonable(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
