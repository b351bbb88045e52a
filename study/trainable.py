"""The function trainable: a trial config (plain data) → one `core.train` run, reported to Tune and MLflow.

Every evaluation of core (every `eval_every` units) becomes one `tune.report` with a `tune.Checkpoint` of the
exact training state, so a restored trial continues where it stopped. The final report is sent after the run's
artifacts are in MLflow, with a checkpoint that marks the trial as done: restoring it re-reports, never retrains.
A diverging run (core's TrainingDiverged) ends the trial as failed, with the reason in Tune and in MLflow. A trial
whose driver is gone ends before its next write to MLflow (study/driver.py).
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from core.checkpoint import load_checkpoint
from core.config import UNIT_NAMES, reported_unit
from search_spaces.space import resolve_trial, searched_params, variant_tags
from study.driver import exit_if_orphaned
from study.tracking import TrialRun

STATE_FILE = "state.pt"
FINAL_FILE = "final.json"


class TrialDiverged(RuntimeError):
    """A trial's training diverged (NaN or infinite loss); the message says where. Plain, so it pickles."""


def tune_metrics(report: Mapping[str, Any], first: str) -> dict[str, Any]:
    """What Tune gets from a core report: the numbers, without core's `done` (a reserved key in Tune); `first`
    (the study's metric) leads, as Tune's table shows the first four metrics of a result."""
    numbers = {k: v for k, v in report.items() if isinstance(v, (int, float)) and k != "done"}
    lead = [k for k in (first, *UNIT_NAMES, "active_modes") if k in numbers]
    return {**{k: numbers[k] for k in lead}, **numbers}


def torch_threads(context) -> int:
    """A trial's torch threads = its CPU share in Ray, or its trials fight over the cores."""
    cpus = context.get_trial_resources().required_resources.get("CPU", 1)
    return max(1, math.floor(cpus))


def describe_resources(context) -> str:
    """The trial's Ray resources, e.g. 'CPU=1, GPU=0.25' (a GPU fraction shares one card with other trials)."""
    required = context.get_trial_resources().required_resources
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(required.items()) if amount)


def describe_device(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu, {threads} thread" + ("s" if threads != 1 else "")


def _save(metrics: Mapping[str, Any], state: Mapping[str, Any] | None, final: bool) -> None:
    """tune.report with a checkpoint of `state`; Tune copies it to storage before `report` returns."""
    folder = Path(tempfile.mkdtemp(prefix="priorstudy-ckpt-"))
    try:
        if state is not None:
            torch.save(dict(state), folder / STATE_FILE)
        if final:
            (folder / FINAL_FILE).write_text(json.dumps(metrics))
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(str(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _restore() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(training state, final metrics if the trial had finished) from Tune's latest checkpoint of this trial."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        state = load_checkpoint(folder / STATE_FILE) if (folder / STATE_FILE).is_file() else None
        final = json.loads((folder / FINAL_FILE).read_text()) if (folder / FINAL_FILE).is_file() else None
    return state, final


def train_trial(trial: dict[str, Any], study: dict[str, Any]) -> None:
    """Ray Tune function trainable: `trial` is Tune's config (variant, axes, seed), `study` the study's constants
    (bound with tune.with_parameters); see search_spaces.space.resolve_trial."""
    from core.errors import TrainingDiverged
    from core.train import resolve_device, train

    config = resolve_trial(study, trial)
    context = tune.get_context()
    threads = torch_threads(context)
    torch.set_num_threads(threads)
    state, final = _restore()
    if final is not None:
        tune.report(final)  # finished before the study was interrupted: nothing to redo
        return

    device = resolve_device(config.device)
    run = TrialRun.open(
        study,
        context.get_trial_id(),
        context.get_trial_name(),
        params={**config.to_dict(), **searched_params(study, trial)},
        tags={
            "device": describe_device(device, threads),
            "ray_resources": describe_resources(context),
            **variant_tags(study, trial),
        },
    )
    # Where it runs now: a trial restored after a lost node runs elsewhere than its run first recorded.
    run.set_tags(
        {
            "hostname": socket.gethostname(),
            "ray_node": ray.get_runtime_context().get_node_id(),
            **({"resumed_from_iteration": state["unit"]} if state is not None else {}),
        }
    )

    pending: dict[str, Any] = {}

    def on_report(report: dict[str, Any]) -> None:
        exit_if_orphaned(study.get("driver"))
        run.log_report(report)
        pending["report"] = report

    def on_checkpoint(checkpoint_state: dict[str, Any]) -> None:
        # checkpoint_every = eval_every, so core checkpoints right after each report, at the same unit.
        if checkpoint_state["unit"] < config.total_units:
            _save(tune_metrics(pending.pop("report"), study["metric"]), checkpoint_state, final=False)
        else:
            pending["final_state"] = checkpoint_state

    out_dir = Path(context.get_trial_dir()) / "artifacts"
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        final = train(
            config,
            on_report=on_report,
            on_checkpoint=on_checkpoint,
            checkpoint_every=config.eval_every,
            resume=state,
            out_dir=out_dir,
        )
    except TrainingDiverged as err:
        run.fail(f"diverged: {err}")
        raise TrialDiverged(str(err)) from None
    except Exception as err:
        run.fail(f"{type(err).__name__}: {err}")
        raise
    exit_if_orphaned(study.get("driver"))
    # Time inside core.train in this process (wall, and CPU of all its threads): the study-overhead benchmark's data.
    final = {**final, "train_time_s": time.perf_counter() - wall, "train_cpu_s": time.process_time() - cpu}
    run.log_metrics({k: final[k] for k in ("train_time_s", "train_cpu_s")}, step=reported_unit(final))
    run.log_artifacts(out_dir, checkpoint=study.get("checkpoints", "all") == "all")
    run.finish()
    _save(tune_metrics(final, study["metric"]), pending.get("final_state"), final=True)
