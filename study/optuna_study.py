"""The Optuna side of a searched study: a TPE sampler set up for the space, and a persistent Optuna study.

Tune's OptunaSearch keeps its Optuna study in memory (pickled inside Tune's searcher state) unless given a storage.
With one, optuna-dashboard and `optuna.visualization` open the same study the search ran: `optuna.db` beside a
local MLflow database (sqlite), else `optuna.journal` in the study's Ray results folder. The Optuna study is named
`STUDY-STUDY_ID`, so a study started again under the same name never continues another's trials.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from study.storage import StudyFolder

OPTUNA_DB = "optuna.db"
OPTUNA_JOURNAL = "optuna.journal"
MAX_STARTUP_TRIALS = 10  # Optuna's default


def startup_trials(samples: int) -> int:
    """Random trials before TPE models anything: Optuna's 10, but at most a quarter of a small budget (12 samples:
    3), so that most trials of a short search are TPE's."""
    return max(2, min(MAX_STARTUP_TRIALS, samples // 4))


def make_sampler(samples: int, seed: int):
    """TPE, multivariate and grouped: a conditional space (keys that exist only for some choices, e.g. the clipping
    thresholds) is modelled jointly per group of keys that appear together, not key by key."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=startup_trials(samples)
        )


def storage_url(study: dict[str, Any], folder: StudyFolder) -> str:
    """Where the study's Optuna study lives: an sqlite URL beside a local MLflow database, else a journal file in
    the study's Ray folder (a remote --storage: in the working folder, as NAME.optuna.journal; Optuna's journal
    needs a local file)."""
    uri = study["tracking_uri"]
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).parent / OPTUNA_DB)
    if folder.local is None:
        return str(Path.cwd() / f"{folder.name}.{OPTUNA_JOURNAL}")
    return str(folder.local / OPTUNA_JOURNAL)


def make_storage(url: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("sqlite:///"):
        return optuna.storages.RDBStorage(url)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def study_name(study: dict[str, Any]) -> str:
    return f"{study['name']}-{study['study_id']}"


def describe(study: dict[str, Any], folder: StudyFolder) -> str:
    """How to open the Optuna study (printed at the end of a searched study)."""
    url = storage_url(study, folder)
    return f"Optuna: study {study_name(study)!r} in {url} (open it with optuna-dashboard {url})"
