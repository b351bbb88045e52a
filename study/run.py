"""python -m study.run --space NAME: a named search space as a Ray Tune study, tracked in MLflow.

Grid spaces run every point (with seeds as an axis) through Tune's grid search; searched spaces run OptunaSearch
(TPE) with ASHA early stopping; with --betas-from, each variant runs at the best betas of its own configuration
in finished grid studies (study/betas_from.py). Everything that can be wrong with the request (space, values,
grid studies, image data and Inception weights, Ray address and resources, tracking URI, an existing study) is
reported before any trial starts. The study can be resumed after a crash or a kill with --resume: finished trials
are kept, unfinished ones continue from their last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import socket
import sys
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

# Token auth for the study's Ray unless the user disabled it (study/ray_auth.py), set before Ray is imported (it reads
# its config then); inside `ray job submit` (RAY_ADDRESS set) the job runs as its cluster does.
if "RAY_ADDRESS" not in os.environ:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# CheckpointConfig(num_to_keep) forces an experiment snapshot per kept checkpoint: wanted (exact resume), not a warning.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

from core.config import BUDGETS, IMAGE_DATASETS, UNIT_NAMES, ConfigError, TrainConfig, reported_unit, resolve_config
from core.metrics.modes import LEARNED_NEAR_MODE, learned
from core.overrides import parse_assignments
from search_spaces import SPACES, SpaceError, StudyDesign, design, get
from study import betas_from, driver, optuna_study, ray_auth, storage, tracking
from study.storage import StorageError, StudyFolder

STUDY_FILE = "study.json"
DEFAULT_DATASET = "8gaussians"
DEFAULT_BUDGET = "quick"
DEFAULT_STORAGE = "ray_results"
EXIT_BAD_REQUEST = 2  # argparse's own code: nothing was started or written
EXIT_NO_TRIAL_FINISHED = 3  # as `python -m core` on a diverged training
EXIT_SOME_TRIALS_FAILED = 4
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: the study stopped with trials unfinished (resume it)
EXIT_CODES = (
    f"exit codes: 0 every trial finished; {EXIT_BAD_REQUEST} the request cannot run (one `error:` line; "
    f"nothing was started or written); {EXIT_NO_TRIAL_FINISHED} no trial finished; "
    f"{EXIT_SOME_TRIALS_FAILED} some trials failed (the summary names each with its error); "
    f"{EXIT_INTERRUPTED} interrupted with trials unfinished (it prints the command that resumes it)"
)


class StudyError(Exception):
    """The request cannot run; the message says what is wrong and what would be right."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Run a named search space as a Ray Tune study (grid, or Optuna + ASHA), tracked in MLflow.",
        epilog=EXIT_CODES,
    )
    p.add_argument("--space", help="search space name (see --list)")
    p.add_argument("--list", action="store_true", help="list the search spaces and exit")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset (default {DEFAULT_DATASET})")
    p.add_argument(
        "--budget", default=DEFAULT_BUDGET, choices=BUDGETS, help=f"training budget (default {DEFAULT_BUDGET})"
    )
    p.add_argument("--samples", type=int, help="trials of a searched space (default: the space's)")
    p.add_argument("--seeds", help="seeds: N for 0..N-1, or a list like 0,3,7 or a range 0-4 (default: the space's)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config key for every trial (repeatable), typed as python -m core types it (its --help "
        "lists every key with its meaning); fixing a grid axis collapses it",
    )
    p.add_argument(
        "--data-dir",
        help="folder of the image datasets in torchvision's layout (default ./data); "
        "every Ray node must see it at this path",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch a missing image dataset into --data-dir once, before any trial starts",
    )
    p.add_argument(
        "--inception-weights",
        help="pytorch-fid's FID Inception weights file: the study reports fid_* "
        "(without it: fd_classifier_*, the Fréchet distance on a classifier)",
    )
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as resources allow)")
    p.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="Ray CPUs per trial = its torch threads (default 1)"
    )
    p.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="Ray GPUs per trial, fractions allowed (default 0)"
    )
    p.add_argument(
        "--address",
        help="address of a running Ray cluster, e.g. 10.0.0.5:6379 or auto (default: start a local Ray for the study)",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else "
        f"{tracking.LOCAL_TRACKING_URI}; any MLflow server URI works; "
        "credentials in it are used, never saved: --resume takes them from MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD); --resume uses the study's own",
    )
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Ray results folder (default ./{DEFAULT_STORAGE})")
    p.add_argument(
        "--name", help="study name = Ray experiment folder = MLflow experiment (default SPACE-DATASET-BUDGET)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the study NAME after an interruption (its space, dataset, budget, seeds and --set "
        "values come from its record)",
    )
    p.add_argument(
        "--checkpoints",
        choices=tracking.CHECKPOINT_CHOICES,
        default="all",
        help="which trials' final checkpoint.pt MLflow keeps as an artifact: all (default; about 5 MB a 2D "
        "trial), best (the best finished trial's, logged at the end of the study) or none",
    )
    p.add_argument(
        "--max-failures", type=int, default=0, help="retries of a crashed trial from its last checkpoint (default 0)"
    )
    p.add_argument(
        "--betas-from",
        action="append",
        default=[],
        metavar="STUDY",
        help="run each variant at the lowest-kl betas of its own configuration in these finished grid "
        "studies (betas_grid, betas_grid_vae) of the same --tracking-uri (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved trials and exit")
    return p


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """'3' → (0, 1, 2); '0,3,7' → (0, 3, 7); '2-4' → (2, 3, 4)."""
    if text is None:
        return None
    try:
        if "," in text:
            return tuple(int(s) for s in text.split(",") if s.strip())
        if "-" in text.strip("-"):
            lo, hi = (int(s) for s in text.split("-"))
            if hi < lo:
                raise ValueError
            return tuple(range(lo, hi + 1))
        count = int(text)
    except ValueError:
        raise StudyError(f"--seeds {text!r} is not N, a list like 0,3,7 or a range like 0-4") from None
    if count < 1:
        raise StudyError(f"--seeds {text!r}: the number of seeds must be at least 1")
    return tuple(range(count))


def user_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set values with --data-dir and --inception-weights; file paths made absolute, as Ray runs each trial in
    its own working directory. An image study always records the data folder it read."""
    out = parse_assignments(args.overrides)
    if args.data_dir is not None:
        out["data_dir"] = args.data_dir
    if args.inception_weights is not None:
        out["inception_weights"] = args.inception_weights
    if args.dataset in IMAGE_DATASETS:
        out.setdefault("data_dir", TrainConfig.data_dir)
    for key in ("data_dir", "inception_weights"):
        if isinstance(out.get(key), str):
            out[key] = str(Path(out[key]).expanduser().resolve())
    return out


def check_inputs(d: StudyDesign, download: bool) -> None:
    """On the driver, before Ray: the image data can be read (fetched first with --download) and the Inception
    weights file exists; otherwise DatasetNotFound / FileNotFoundError saying where the files go."""
    if d.dataset not in IMAGE_DATASETS:
        return
    from core.data.images import ensure_dataset
    from core.metrics.images import check_inception_weights

    config = resolve_config(d.dataset, d.budget, **d.fixed)
    if config.inception_weights is not None:
        check_inception_weights(config.inception_weights)
    ensure_dataset(d.dataset, config.data_dir, download=download or config.download)


def check_resources(available: dict[str, float], cpus_per_trial: float, gpus_per_trial: float) -> None:
    """A trial asking for more than the cluster has would wait forever: say so instead."""
    for name, wanted, flag in (
        ("CPU", cpus_per_trial, "--cpus-per-trial"),
        ("GPU", gpus_per_trial, "--gpus-per-trial"),
    ):
        have = available.get(name, 0.0)
        if wanted > have:
            raise StudyError(
                f"{flag} {wanted:g}: the Ray cluster has {have:g} {name}s, so no trial could start "
                f"(ask for at most {have:g}{', or run where a GPU is' if name == 'GPU' else ''})"
            )


def list_spaces() -> str:
    rows = []
    for name, space in SPACES.items():
        d = design(space, space.datasets[0], DEFAULT_BUDGET)
        how = f"Optuna+ASHA, {d.trial_count} samples" if d.searched else f"grid, {d.trial_count} trials"
        rows.append(f"{name:<24} {how:<26} {space.description}")
    return "\n".join(rows)


def describe_trials(d: StudyDesign) -> str:
    """The dry-run listing: the fixed configuration once, then what each trial changes."""
    base = resolve_config(d.dataset, d.budget, **d.fixed).to_dict()
    configs = d.validate()
    lines = [
        f"space {d.space.name}: {d.space.description}",
        f"dataset {d.dataset}, budget {d.budget}, metric {d.metric} ({d.space.mode}), "
        f"{d.trial_count} trials, " + ("Optuna TPE + ASHA" if d.searched else "grid search"),
        "fixed config: " + ", ".join(f"{k}={v}" for k, v in base.items() if k != "extra"),
        *describe_variant_tags(d),
    ]
    if d.searched:
        if isinstance(d.search, dict):
            lines += [f"searched: {k} ~ {describe_domain(v)}" for k, v in d.search.items()]
        else:
            lines.append(f"searched: Optuna define-by-run {d.search.__module__}.{d.search.__name__}")
        lines.append(f"seed {d.seeds[0]}; validated on {len(configs)} corner and random configurations")
        return "\n".join(lines)
    for i, (point, config) in enumerate(zip(d.grid_points(), configs)):
        changed = {k: v for k, v in config.to_dict().items() if base.get(k) != v}
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        lines.append(f"  trial {i:>3}: {label}  ->  " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    return "\n".join(lines)


def describe_variant_tags(d: StudyDesign) -> list[str]:
    """Where a variant's added keys come from, e.g. 'variant vae-vamp: betas_from=grid: run 1f2e (kl 3.1)'."""
    return [
        f"variant {v}: " + ", ".join(f"{k}={value}" for k, value in tags.items()) for v, tags in d.variant_tags.items()
    ]


def describe_domain(domain) -> str:
    from ray.tune.search.sample import Categorical

    if isinstance(domain, Categorical):
        return f"choice {domain.categories}"
    return f"{type(domain.get_sampler()).__name__.strip('_').lower()}{domain.domain_str}"


def check_address(address: str, timeout: float = 5.0) -> None:
    """A TCP check of host:port (also ray://host:port), so an unreachable cluster fails in seconds."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise StudyError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    if address.startswith(("http://", "https://")):
        raise StudyError(
            f"--address {address!r} looks like the dashboard's job API; give the cluster's GCS "
            "address HOST:6379 (for `ray job submit`, use its own --address)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise StudyError(
            f"cannot reach a Ray cluster at {address} ({err}); start one with "
            "`ray start --head` or leave --address out to run locally"
        ) from None
    if not address.startswith("ray://") and not runs_a_ray_node():
        raise StudyError(
            f"this machine is not a node of the Ray cluster at {address}: a Ray 2.60 driver attaches through a Ray "
            "node on its own machine (ray.init would wait 60 s and fail). Submit the study as a Ray Job instead: "
            f"ray job submit --address http://{host}:8265 --working-dir . -- python -m study.run ... (without "
            "--address; see the README's 'On a Ray cluster'), or run it on a node of the cluster"
        )


def runs_a_ray_node() -> bool:
    """Whether a Ray node (its raylet) runs on this machine."""
    import psutil

    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "raylet":
            return True
    return False


def connect_ray(address: str | None) -> None:
    """A local Ray by default; inside `ray job submit` the job's cluster; with --address that cluster, shipping
    this project's packages to its workers (they may run elsewhere, or from another folder)."""
    import ray

    import core
    import search_spaces
    import study

    if ray.is_initialized():  # a caller (a notebook, a test) connected already
        return
    ray_auth.refresh()
    if address is None and "RAY_ADDRESS" not in os.environ:
        # Ray 2.60 cannot bind its services to 127.0.0.1 (ray.init maps _node_ip_address 127.0.0.1 to the outward
        # address; the GCS and raylet listen on every interface): the token keeps strangers out.
        if ray_auth.enabled():
            ray_auth.ensure_token()
        ray.init(address="local", include_dashboard=False)  # "local": never attach to another `ray start`
        return
    if address is not None and ray_auth.enabled() and not ray_auth.has_token():
        raise StudyError(
            f"Ray token authentication is on (RAY_AUTH_MODE=token) but there is no token for the "
            f"cluster at {address}: copy the head node's token to {ray_auth.token_path()} (or set "
            "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), or set RAY_AUTH_MODE=disabled for a cluster "
            "started without authentication"
        )
    runtime_env = None
    if address is not None:
        runtime_env = {
            "py_modules": [core, search_spaces, study],
            "env_vars": {
                "MLFLOW_DISABLE_TELEMETRY": os.environ["MLFLOW_DISABLE_TELEMETRY"],
                **tracking.credential_env(),
            },
        }  # a local Ray's workers inherit them
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except ConnectionError as err:
        target = address or os.environ["RAY_ADDRESS"]
        raise StudyError(f"cannot connect to the Ray cluster at {target}: {err}") from None


def build_tuner(d: StudyDesign, study: dict[str, Any], args: argparse.Namespace, folder: StudyFolder):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from study.trainable import train_trial

    trainable = tune.with_resources(
        tune.with_parameters(train_trial, study=study), {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    )
    if args.resume:
        return tune.Tuner.restore(
            folder.uri, trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
    search_alg = scheduler = None
    presets = d.preset_points()
    if presets is not None:  # a narrowed grid: only these points of the product grid, each with every seed
        # Tune ignores max_concurrent_trials when given a generator: the generator takes it.
        search_alg = BasicVariantGenerator(points_to_evaluate=presets, max_concurrent=args.max_concurrent or 0)
    if d.space.early_stopping is not None:
        base = resolve_config(d.dataset, d.budget, **d.fixed)
        # Compare trials first at the first evaluation after warm-up: before it, the game has not started.
        grace = base.warmup + base.eval_every if base.game_starts else base.eval_every
        scheduler = ASHAScheduler(
            time_attr=base.unit_name,
            max_t=base.total_units,
            grace_period=min(grace, base.total_units),
            reduction_factor=d.space.early_stopping.reduction_factor,
        )
    if d.searched:
        search_alg = OptunaSearch(
            space=None if isinstance(d.search, dict) else d.search,
            metric=d.metric,
            mode=d.space.mode,
            sampler=optuna_study.make_sampler(d.samples, d.seeds[0]),
            study_name=optuna_study.study_name(study),
            storage=optuna_study.make_storage(optuna_study.storage_url(study, folder)),
        )
    # Tune needs the metric only to search and to stop early, and then in every report; a grid's results are ranked
    # by `summarize` (an image study's FID comes only at metric_epochs and at the end).
    return tune.Tuner(
        trainable,
        param_space=d.param_space(),
        tune_config=tune.TuneConfig(
            metric=d.metric if d.searched else None,
            mode=d.space.mode if d.searched else None,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=d.samples if d.searched else len(presets or [None]),
            max_concurrent_trials=args.max_concurrent,
            reuse_actors=True,  # a finished trial's process runs the next one: no new process, no re-imports
            trial_name_creator=trial_label,
            trial_dirname_creator=trial_folder,
        ),
        run_config=tune.RunConfig(
            name=folder.name,
            storage_path=folder.storage,
            callbacks=[tracking.TrialRunStatus(study), driver.WorkerRecord(folder)],
            failure_config=tune.FailureConfig(max_failures=args.max_failures, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1,
        ),
    )


def trial_label(trial) -> str:
    """A trial's name (Tune's table, the MLflow run name): its configuration, e.g. 'clip=adaptive λ=10 s=1'."""
    config = trial.config
    parts = [
        f"{SHORT_NAMES.get(k, k)}={v:.3g}" if isinstance(v, float) else f"{SHORT_NAMES.get(k, k)}={v}"
        for k, v in config.items()
        if k != "seed"
    ]
    return " ".join([*parts, f"s={config.get('seed', '?')}"])


SHORT_NAMES = {"responsibility_weight": "λ"}


def trial_folder(trial) -> str:
    """Tune's default folder name, kept when trials are named by configuration (train_trial_ID_N_TAG_DATE)."""
    from ray.tune.utils import date_str

    return f"{trial.trainable_name}_{trial.trial_id}_{trial.experiment_tag}"[:130] + f"_{date_str()}"


def summarize(
    results,
    d: StudyDesign,
    study: dict[str, Any],
    folder: StudyFolder,
    top: int = 10,
    interrupted: Collection[str] = (),
) -> str:
    """Best configurations (mean over seeds for grids), failures, the trials a Ctrl-C left unfinished (the folder
    names in `interrupted`, unranked), and where to look next."""
    metric, mode = d.metric, d.space.mode
    rows, failures, stopped, not_learned, ranked, early = tally(results, d, interrupted)
    lines = [
        f"\nstudy {study['name']}: trials finished: {len(rows)}, failed: {len(failures)}"
        + (f", stopped early by ASHA: {len(early)}" if early else "")
        + (f", interrupted: {len(stopped)}" if stopped else "")
        + (f", not started: {d.trial_count - len(results)}" if d.trial_count > len(results) else "")
        + "; "
        f"best by {metric} ({mode}{', mean over seeds' if not d.searched else ''}):"
    ]
    for key, values in ranked[:top]:
        mean = sum(values) / len(values)
        spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        label = ", ".join(f"{k}={v}" for k, v in json.loads(key).items()) or "(base config)"
        lines.append(f"  {metric} {mean:.4g} (std {spread:.2g}, n={len(values)})  {label}")
    if failures:
        lines.append("failed trials:")
        lines += failures
    if stopped:
        lines.append("interrupted trials (not ranked; --resume continues each from its last checkpoint):")
        lines += stopped
    if not_learned:
        lines.append(
            f"finished but did not learn the data ({len(not_learned)} of {len(rows)}: fewer than 8 modes "
            f"or under {LEARNED_NEAR_MODE:.0%} of samples within 0.1 of a mode; their {metric} is in the "
            "means above):"
        )
        lines += not_learned
    lines.append(
        f"MLflow: {tracking.mlflow_ui_hint(study['tracking_uri'], study.get('experiment_id'))}  "
        f"(experiment {study['name']!r})"
    )
    lines.append(f"Ray results: {folder}")
    if d.searched:
        lines.append(optuna_study.describe(study, folder))
    code = exit_code(results, d.trial_count, interrupted)
    if code == EXIT_NO_TRIAL_FINISHED:
        lines.append(f"no trial finished (exit code {code})")
    elif code == EXIT_SOME_TRIALS_FAILED:
        lines.append(f"{len(failures)} of {len(results)} trials failed (exit code {code})")
    return "\n".join(lines)


def tally(results, d: StudyDesign, interrupted: Collection[str] = ()):
    """(finished rows, failure lines, interrupted lines, not-learned lines, configurations ranked by their mean
    metric over seeds, trials ASHA stopped early) of a study's results. Stopped trials are counted, not ranked."""
    metric, mode = d.metric, d.space.mode
    rows, failures, not_learned, stopped, early = [], [], [], [], []
    for result in results:
        trial = Path(result.path).name
        if result.error is not None:
            failures.append(f"  {trial}: {describe_error(result.error)}")
            continue
        if trial in interrupted:
            unit = next((name for name in UNIT_NAMES if name in result.metrics), "iteration")
            stopped.append(f"  {trial}: at {unit} {result.metrics.get(unit, 0)}")
            continue
        if result.metrics and metric in result.metrics:
            if d.space.early_stopping and reported_unit(result.metrics, math.inf) < units_of(d, result.config):
                early.append(trial)  # stopped by ASHA at a rung: its metric is an unfinished model's
                continue
            point = {k: v for k, v in result.config.items() if k != "seed"}
            rows.append((point, result.config.get("seed"), result.metrics[metric], result))
            if "near_mode" in result.metrics and not learned(result.metrics):
                not_learned.append(
                    f"  {trial}: {result.metrics['modes_covered']:.0f} "
                    f"modes covered, {result.metrics['near_mode']:.0%} of samples near a mode"
                )
    return rows, failures, stopped, not_learned, rank(rows, mode), early


def rank(rows, mode: str) -> list[tuple[str, list[float]]]:
    """(configuration as JSON, its seeds' metric values), best mean first: the finished rows grouped by point."""
    import pandas as pd

    if not rows:
        return []
    frame = pd.DataFrame(
        {
            "point": [json.dumps(p, sort_keys=True, default=str) for p, *_ in rows],
            "value": [value for _, _, value, _ in rows],
        }
    )
    groups = frame.groupby("point", sort=False)["value"].agg(values=list, mean="mean")
    groups = groups.sort_values("mean", ascending=(mode != "max"), kind="stable")
    return list(zip(groups.index, groups["values"], strict=True))


def units_of(d: StudyDesign, trial: dict[str, Any]) -> int:
    """How many iterations (or epochs) a trial of this study trains when nothing stops it."""
    from search_spaces.space import resolve_trial

    return resolve_trial(d.study_config(), trial).total_units


def close_study_run(
    results, d: StudyDesign, study: dict[str, Any], stopped: Collection[str], interrupted: bool
) -> None:
    """The parent run's trial counts and best configuration (mean metric over its seeds); MLflow trouble here
    costs no result (the trials' runs are already closed)."""
    from mlflow.exceptions import MlflowException

    rows, failures, stopped_lines, not_learned, ranked, early = tally(results, d, stopped)
    counts = {
        "finished": len(rows),
        "failed": len(failures),
        "interrupted": len(stopped_lines),
        "not_learned": len(not_learned),
        "stopped_early": len(early),
    }
    best = None
    if ranked:
        key, values = ranked[0]
        best = {**json.loads(key), d.metric: f"{sum(values) / len(values):.4g}", "n": len(values)}
    try:
        if study.get("checkpoints") == "best" and rows and not interrupted:
            from study.trainable import STATE_FILE

            pick = max if d.space.mode == "max" else min
            best_trial = pick(rows, key=lambda row: row[2])[3]
            if best_trial.checkpoint is not None:  # the trial's last Tune checkpoint: its final state
                with best_trial.checkpoint.as_directory() as folder:
                    tracking.log_final_checkpoint(study, best_trial.metrics["trial_id"], Path(folder) / STATE_FILE)
        tracking.close_study_run(study, counts, best, interrupted)
    except MlflowException as err:
        print(f"warning: could not close the study's MLflow run: {err.message}")


def describe_error(error: BaseException) -> str:
    """A trial's error as its type and first line, e.g. 'TrialDiverged: training diverged at iteration 3: ...'
    (Ray wraps it in a RayTaskError whose message is the whole remote traceback; the original is its cause)."""
    cause = getattr(error, "cause", None) or error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else '(no message)'}"


def interrupted_trials(folder: StudyFolder) -> set[str]:
    """The folder names of the trials a Ctrl-C left running or waiting (Tune status RUNNING, PENDING or PAUSED),
    from Tune's last snapshot of the study. Neither the ResultGrid tells: a Result carries no status, Tune marks its
    trials TERMINATED when it stops them after the snapshot, and a result's `done` is lost when a study resumes."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    trials = ExperimentAnalysis(folder.uri).trials
    return {Path(t.path).name for t in trials if t.status not in (Trial.TERMINATED, Trial.ERROR)}


def unfinished(results, trial_count: int, interrupted: Collection[str]) -> int:
    """The study's trials left running or waiting (`interrupted`) and those Tune had not created yet."""
    return len(interrupted) + max(0, trial_count - len(results))


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The command that continues the study: its record holds the rest, but not where it ran or its resources."""
    cmd = ["python", "-m", "study.run", "--resume", "--name", name, "--storage", storage.normalized(args.storage)]
    if args.address:
        cmd += ["--address", args.address]
    parser = build_parser()
    for flag, key in (("--cpus-per-trial", "cpus_per_trial"), ("--gpus-per-trial", "gpus_per_trial")):
        if getattr(args, key) != parser.get_default(key):
            cmd += [flag, f"{getattr(args, key):g}"]
    return shlex.join(cmd)


def exit_code(results, trial_count: int | None = None, interrupted: Collection[str] = ()) -> int:
    """EXIT_INTERRUPTED when some of the study's trial_count trials (default: those in `results`) are unfinished,
    else 0 when every trial finished, EXIT_NO_TRIAL_FINISHED when none did, EXIT_SOME_TRIALS_FAILED otherwise."""
    if unfinished(results, len(results) if trial_count is None else trial_count, interrupted):
        return EXIT_INTERRUPTED
    failed = sum(result.error is not None for result in results)
    if failed and failed == len(results):
        return EXIT_NO_TRIAL_FINISHED
    return EXIT_SOME_TRIALS_FAILED if failed else 0


def load_record(args: argparse.Namespace) -> dict[str, Any]:
    """--resume: the study's own record decides its space, dataset, budget, seeds, samples and --set values."""
    name = args.name or f"{args.space}-{args.dataset}-{args.budget}"
    folder = StudyFolder.of(args.storage, name)
    if not folder.has(STUDY_FILE):
        raise StudyError(f"no study to resume at {folder} (start it without --resume)")
    saved = json.loads(folder.read_text(STUDY_FILE))
    args.name, args.space, args.dataset, args.budget = name, saved["space"], saved["dataset"], saved["budget"]
    return saved


def study_tracking_uri(args: argparse.Namespace) -> str:
    """--tracking-uri as the study records it: absolute, without credentials (tracking.adopt_credentials)."""
    return tracking.adopt_credentials(
        tracking.absolute_tracking_uri(args.tracking_uri or tracking.default_tracking_uri())
    )


def prepare(args: argparse.Namespace) -> tuple[StudyDesign, str, StudyFolder]:
    """Everything that can be checked without Ray: space, values, names and folders."""
    if args.resume:
        saved = load_record(args)
        seeds, samples, fixed = tuple(saved["seeds"]), saved["samples"], saved["overrides"]
    else:
        seeds, samples, fixed = parse_seeds(args.seeds), args.samples, user_overrides(args)
    space = get(args.space)
    if args.resume and not space.searched:
        samples = None
    d = design(space, args.dataset, args.budget, seeds=seeds, samples=samples, fixed=fixed)
    if args.resume and args.betas_from:
        raise StudyError("--resume runs the study at the betas it chose when it started; leave out --betas-from")
    if args.resume and saved["study"].get("variant_tags"):
        tags = saved["study"]["variant_tags"]
        d = d.with_variant_keys({v: saved["study"]["variants"][v] for v in tags}, tags)
    if args.betas_from:
        d = betas_from.apply(d, betas_from.choose(d, args.betas_from, study_tracking_uri(args)))
    d.validate()
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise StudyError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise StudyError(f"--max-concurrent {args.max_concurrent} must be at least 1")
    if args.max_failures < 0:  # Ray would read a negative count as "retry forever"
        raise StudyError(f"--max-failures {args.max_failures} must be at least 0 (retries of a crashed trial)")
    name = args.name or f"{space.name}-{args.dataset}-{args.budget}"
    return d, name, StudyFolder.of(args.storage, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(list_spaces())
        return 0
    if not args.space and not (args.resume and args.name):
        print(
            "error: --space is required (one of: " + ", ".join(SPACES) + "; see --list), or --resume --name NAME",
            file=sys.stderr,
        )
        return EXIT_BAD_REQUEST
    try:
        d, name, folder = prepare(args)
        if args.dry_run:
            print(describe_trials(d))
            return 0
        check_inputs(d, args.download)
        for line in describe_variant_tags(d):
            print(line)
        try:
            results, study = run_study(d, args, name, folder)
        except KeyboardInterrupt:  # a second Ctrl-C (the first ends Tune's loop), or one before the loop
            from ray import tune

            print(
                f"\nstudy {name!r} interrupted; "
                + (
                    f"continue it with:\n  {resume_command(args, name)}"
                    if tune.Tuner.can_restore(folder.uri)
                    else "Tune saved nothing: start it again"
                )
            )
            return EXIT_INTERRUPTED
    except (
        StudyError,
        SpaceError,
        ConfigError,
        tracking.TrackingError,
        betas_from.BetasError,
        StorageError,
        FileNotFoundError,
    ) as err:
        # FileNotFoundError: the image data (core's DatasetNotFound) or the Inception weights are missing
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    stopped = interrupted_trials(folder)
    print(summarize(results, d, study, folder, interrupted=stopped))
    code = exit_code(results, d.trial_count, stopped)
    close_study_run(results, d, study, stopped, interrupted=code == EXIT_INTERRUPTED)
    if code == EXIT_INTERRUPTED:
        print(
            f"study {name!r} interrupted with {unfinished(results, d.trial_count, stopped)} of {d.trial_count} "
            f"trials unfinished (exit code {code}); continue it with:\n  {resume_command(args, name)}"
        )
    return code


def run_study(d: StudyDesign, args: argparse.Namespace, name: str, folder: StudyFolder):
    """Check the study's folder and tracking store, connect to Ray and check its resources, and only then create
    the study (MLflow experiment, folder, record) and fit: a refused request leaves nothing behind. Returns Tune's
    ResultGrid and the study record."""
    if args.resume:
        check_ended(name, folder)
    uri = check_study(args, name, folder)
    connect_ray(args.address)
    import ray

    check_resources(ray.cluster_resources(), args.cpus_per_trial, args.gpus_per_trial)
    study = {**open_study(args, d, name, folder, uri), "driver": driver.this_driver()}
    logging.getLogger("ray.tune.tune").addFilter(OWN_RESUME_HINT)
    return build_tuner(d, study, args, folder).fit(), study


def check_ended(name: str, folder: StudyFolder) -> None:
    """--resume: the study's last run on this machine has ended, driver and trial workers (study/driver.py)."""
    last, live = driver.wait_for_end(folder)
    if live:
        raise StudyError(driver.describe_live(name, last, live))


class OwnResumeHint(logging.Filter):
    """Drops Tune's hint after Ctrl-C (`Tuner.restore(...)`): main prints the study's own --resume command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


OWN_RESUME_HINT = OwnResumeHint()  # one instance: a logger adds a filter once


def check_study(args: argparse.Namespace, name: str, folder: StudyFolder) -> str:
    """Before Ray and before anything is written: the study folder can be created (or, on --resume, restored)
    and the tracking store can be used; returns the study's tracking URI."""
    from ray import tune

    if args.resume:
        uri = json.loads(folder.read_text(STUDY_FILE))["study"]["tracking_uri"]
        if args.tracking_uri is not None and study_tracking_uri(args) != uri:
            raise StudyError(
                f"study {name!r} tracks to {uri}, not --tracking-uri "
                f"{tracking.redact(args.tracking_uri)} (leave it out to resume)"
            )
        tracking.check_tracking_uri(uri)
        if not tune.Tuner.can_restore(folder.uri):
            raise StudyError(
                f"study {name!r} at {folder} stopped before Tune saved any state; delete that folder and start it again"
            )
    else:
        if folder.exists():
            raise StudyError(
                f"study {name!r} already exists at {folder}: continue it with --resume, or choose another --name"
            )
        problem = folder.unwritable()
        if problem:
            raise StudyError(f"--storage {args.storage}: {problem}")
        given = tracking.absolute_tracking_uri(args.tracking_uri or tracking.default_tracking_uri())
        tracking.check_tracking_uri(given)
        uri = study_tracking_uri(args)
        if uri != given:
            print(
                "note: the credentials in --tracking-uri are not saved with the study; to --resume it, set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or pass the same --tracking-uri)"
            )
    if args.address:
        check_address(args.address)
    if args.address and tracking.is_local_store(uri):
        print(
            f"note: trials on other machines cannot write to {uri}; "
            "use an MLflow server (--tracking-uri http://HOST:5000) for a multi-machine cluster"
        )
    return uri


def describe_study(d: StudyDesign, name: str) -> str:
    """The parent run's note (MLflow shows it as the run's description): what the study compares, and how."""
    factors = ([f"variant ({', '.join(d.space.variants)})"] if d.space.variants else []) + [
        f"{k} ({', '.join(map(str, v))})" for k, v in d.grid.items()
    ]
    if d.searched:
        searched = ", ".join(d.search) if isinstance(d.search, dict) else "define-by-run"
        factors.append(f"searched by Optuna: {searched}")
    factors = "; ".join(factors) or "none"
    return (
        f"Study **{name}**: space `{d.space.name}` on {d.dataset} at budget `{d.budget}`, {d.trial_count} "
        f"trials, seeds {', '.join(map(str, d.seeds))}. Factors: {factors}. Metric: {d.metric} "
        f"({d.space.mode}). The trials are nested below; `python -m analysis.report --study {name}` adds its "
        "tables and figures to this run's artifacts (report/)."
    )


def open_study(args: argparse.Namespace, d: StudyDesign, name: str, folder: StudyFolder, uri: str) -> dict[str, Any]:
    """Create the study's MLflow experiment, folder and record (on --resume: reload the record, reopen the
    experiment); `uri` from check_study."""
    if args.resume:
        study = json.loads(folder.read_text(STUDY_FILE))["study"]
        study["experiment_id"] = tracking.ensure_experiment(uri, name)
        tracking.reopen_study_run(study)
        return study
    study = {
        **d.study_config(),
        "name": name,
        "metric": d.metric,
        "study_id": uuid.uuid4().hex[:12],
        "tracking_uri": uri,
        "checkpoints": args.checkpoints,
        "tags": {
            "space": d.space.name,
            "study": name,
            "dataset": d.dataset,
            "budget": d.budget,
            **tracking.project_tags(),
        },
    }
    study["experiment_id"] = tracking.ensure_experiment(uri, name)
    request = {
        "space": d.space.name,
        "dataset": d.dataset,
        "budget": d.budget,
        "seeds": list(d.seeds),
        "samples": d.samples,
        "overrides": user_overrides(args),
    }
    study["parent_run_id"] = tracking.open_study_run(
        study, {**request, "trials": d.trial_count}, describe_study(d, name)
    )
    folder.create()
    folder.write_text(STUDY_FILE, json.dumps({**request, "study": study}, indent=2))
    return study


if __name__ == "__main__":
    sys.exit(main())
