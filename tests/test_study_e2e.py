"""End-to-end studies on smoke budgets: real Ray, real MLflow (sqlite file and a server on 127.0.0.1), a diverging
trial, Optuna + ASHA, an image study on digits with GPU fractions, a study stopped with Ctrl-C, resumed, killed and
resumed again, and `ray job submit` to a local `ray start --head` (all with Ray's token auth, tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis

from core.checkpoint import load_checkpoint
from core.config import TrainConfig
from search_spaces import design
from search_spaces.space import SearchSpace
from study.driver import DRIVER_FILE
from study.run import build_parser, main, run_study
from study.storage import StudyFolder
from study.trainable import FINAL_FILE

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIG_KEYS = {f for f in TrainConfig.__dataclass_fields__ if f != "extra"}
SMOKE_ITERATIONS = 60  # budget smoke, eval_every 20


def child_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        MLFLOW_DISABLE_TELEMETRY="true",
        MPLCONFIGDIR=str(tmp_path / "mpl"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    # as with an activated venv: the job's `python` (ray job submit's entrypoint) is the project's
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process serving {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own process group, so that it and everything it starts can be stopped by its id."""
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def study_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def runs_of(uri: str, experiment: str) -> list:
    """The trials' runs (not the study's parent run)."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("priorstudy.role") != "study"]


def assert_complete_run(client: MlflowClient, run, space: str, study: str) -> None:
    """A finished trial's run: every config key as a param, kl/jsd as step series, tags, artifacts."""
    assert run.info.status == "FINISHED"
    assert CONFIG_KEYS <= set(run.data.params)
    tags = run.data.tags
    assert tags["space"] == space and tags["study"] == study
    assert tags["trial_id"] and tags["git_commit"] and tags["project_version"] and tags["device"].startswith("cpu")
    for metric in ("kl", "jsd", "loss_encoder"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert steps == list(range(20, SMOKE_ITERATIONS + 1, 20)), (metric, steps)
    assert "gnelbo" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"figure.png", "metrics.json", "samples.npy"} <= artifacts
    metrics_json = json.loads(Path(client.download_artifacts(run.info.run_id, "metrics.json")).read_text())
    state = load_checkpoint(Path(client.download_artifacts(run.info.run_id, "checkpoint.pt")))  # --checkpoints all
    assert state["unit"] == SMOKE_ITERATIONS and state["config"] == metrics_json["config"]
    assert metrics_json["config"]["seed"] == int(run.data.params["seed"])
    assert metrics_json["kl"] == pytest.approx(run.data.metrics["kl"])


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the in-process studies of this module; workers import the project via PYTHONPATH. It declares
    one logical GPU (no device behind it), so that trials asking for a GPU fraction are scheduled as on a GPU node."""
    import ray

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved]))
    ray.init(address="local", include_dashboard=False, num_cpus=2, num_gpus=1)
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = saved


def in_process_study(space: SearchSpace, tmp_path: Path, *extra: str, **design_args):
    d = design(space, "8gaussians", "smoke", **design_args)
    d.validate()
    args = build_parser().parse_args(
        [
            "--space",
            space.name,
            "--storage",
            str(tmp_path / "ray_results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlruns.db",
            *extra,
        ]
    )
    return run_study(d, args, space.name, StudyFolder.of(tmp_path / "ray_results", space.name))


def test_grid_study_in_sqlite_with_a_diverging_trial(local_ray, tmp_path):
    """Two learning rates × two seeds: lr = 1e6 diverges and is recorded failed, with the reason, in Tune and in
    MLflow; the other trials finish with their params, metric histories and artifacts."""
    space = SearchSpace(
        name="lr_probe", description="test", base={"prior": "vamp_to_mog"}, grid={"lr": [2e-4, 1e6]}, seeds=(0, 1)
    )
    results, study = in_process_study(space, tmp_path)

    errors = [r for r in results if r.error is not None]
    finished = [r for r in results if r.error is None]
    assert len(errors) == 2 and len(finished) == 2
    assert all(r.config["lr"] == 1e6 and "TrialDiverged" in str(r.error) for r in errors)
    for r in finished:
        assert r.metrics["iteration"] == SMOKE_ITERATIONS and "gnelbo" in r.metrics
        assert list(r.metrics_dataframe["iteration"]) == [20, 40, 60]  # one Tune report per evaluation

    uri = study["tracking_uri"]
    runs = runs_of(uri, "lr_probe")
    assert len(runs) == 4
    client = MlflowClient(uri)
    for run in runs:
        if float(run.data.params["lr"]) == 1e6:
            assert run.info.status == "FAILED"
            assert run.data.tags["failure_reason"].startswith("diverged: training diverged at iteration")
        else:
            assert_complete_run(client, run, "lr_probe", "lr_probe")
    assert Path(client.get_experiment_by_name("lr_probe").artifact_location.removeprefix("file://")) == (
        tmp_path / "mlartifacts"
    )


def test_optuna_asha_study_with_derived_beta_neg(local_ray, tmp_path):
    """A searched space runs through OptunaSearch + ASHA; β_neg = m·β_kl shows in MLflow as a param. The Optuna
    study persists beside the MLflow database, where Optuna's own tools open it: each trial told its kl."""
    import optuna

    from search_spaces import get
    from study import optuna_study

    results, study = in_process_study(get("betas"), tmp_path, samples=3)
    assert len(results) == 3 and not results.errors
    runs = runs_of(study["tracking_uri"], "betas")
    assert len(runs) == 3
    stored = optuna.load_study(study_name=f"betas-{study['study_id']}", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in stored.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert sorted(t.value for t in stored.trials) == pytest.approx(sorted(r.data.metrics["kl"] for r in runs))
    assert sorted(t.params["beta_kl"] for t in stored.trials) == pytest.approx(
        sorted(float(r.data.params["beta_kl"]) for r in runs)
    )
    assert optuna_study.startup_trials(3) == 2 and optuna_study.startup_trials(24) == 6
    for run in runs:
        p = run.data.params
        assert float(p["beta_neg"]) == pytest.approx(round(int(p["beta_neg_multiple"]) * float(p["beta_kl"]), 3))
        assert run.info.status == "FINISHED"
    best = results.get_best_result()
    assert best.metrics["kl"] == min(r.metrics["kl"] for r in results)


def test_conditional_define_by_run_space(local_ray, tmp_path, capsys):
    """The clipping space is an Optuna define-by-run function: thresholds exist only in `fixed` trials. With
    --checkpoints best only the best trial's run keeps its final checkpoint.pt, one that --resume can read."""
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    assert (
        main(
            [
                "--space",
                "clipping",
                "--budget",
                "smoke",
                "--samples",
                "3",
                "--checkpoints",
                "best",
                "--storage",
                str(tmp_path / "ray_results"),
                "--tracking-uri",
                uri,
            ]
        )
        == 0
    )
    assert "trials finished: 3, failed: 0" in capsys.readouterr().out
    client = MlflowClient(uri)
    runs = runs_of(uri, "clipping-8gaussians-smoke")
    assert len(runs) == 3
    for run in runs:
        p = run.data.params
        assert run.info.status == "FINISHED" and p["clip"] in ("none", "adaptive", "fixed")
        assert (p["clip_logvar_min"] != "None") == (p["clip"] == "fixed")
    kept = [r for r in runs if "checkpoint.pt" in {a.path for a in client.list_artifacts(r.info.run_id)}]
    assert len(kept) == 1 and kept[0].data.metrics["kl"] == min(r.data.metrics["kl"] for r in runs)
    state = load_checkpoint(Path(client.download_artifacts(kept[0].info.run_id, "checkpoint.pt")))
    assert state["unit"] == SMOKE_ITERATIONS and state["config"]["seed"] == int(kept[0].data.params["seed"])


def test_storage_as_a_file_uri(local_ray, tmp_path, capsys):
    """--storage file://...: Tune, study.json and driver.state all land in that folder, and --resume with the same
    URI finds the finished study there."""
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    storage = f"file://{tmp_path}/nfs/ray_results"
    args = [
        "--space",
        "learnable_prior",
        "--budget",
        "smoke",
        "--seeds",
        "1",
        "--set",
        "variant=standard",
        "--storage",
        storage,
        "--tracking-uri",
        uri,
        "--name",
        "on-uri",
    ]
    assert main(args) == 0
    assert "trials finished: 1, failed: 0" in capsys.readouterr().out
    folder = tmp_path / "nfs" / "ray_results" / "on-uri"
    assert {"study.json", DRIVER_FILE} <= {p.name for p in folder.iterdir()}
    assert any(folder.glob("train_trial_*/checkpoint_*"))
    assert main(["--resume", "--name", "on-uri", "--storage", storage]) == 0
    assert "trials finished: 1, failed: 0" in capsys.readouterr().out
    assert len(runs_of(uri, "on-uri")) == 1


def test_ablation_takes_each_variants_betas_from_a_tiny_grid_study(local_ray, tmp_path, capsys):
    """A β grid of 2 points × 2 of the table's configurations at smoke, then the 2D table at each variant's own
    lowest-kl betas: the choice is the grid's lowest kl per variant (tests/test_study_cli.py checks the choice
    among distinct kls); a variant the grid did not run stops the study
    before any trial (exit 2, one line naming it and the study); the ablation's trial runs at its betas (params), names
    its source (tag betas_from), and its table shows the β and the protocol."""
    from analysis.loading import load_study
    from analysis.report import build_table
    from search_spaces import get
    from search_spaces.configurations import BASE, SINTRO
    from study.betas_from import BETAS, choose

    variants = {v: SINTRO[v] for v in ("sintro-standard", "sintro-mog-LC-IP")}
    grid = SearchSpace(name="tiny_grid", description="test", base=BASE, variants=variants, grid={"beta_kl": [0.1, 0.5]})
    results, study = in_process_study(grid, tmp_path)
    assert len(results) == 4 and not results.errors
    uri = study["tracking_uri"]
    lowest = {}  # per variant, the run with the lowest kl; on a tie (every kl is one value at smoke) lowest betas

    def rank(run):
        return run.data.metrics["kl"], *(float(run.data.params[b]) for b in BETAS)

    for run in runs_of(uri, "tiny_grid"):
        variant = run.data.params["variant"]
        if variant not in lowest or rank(run) < rank(lowest[variant]):
            lowest[variant] = run
    assert set(lowest) == set(variants)
    for variant, run in lowest.items():
        ablation = design(get("ablation_priors"), "8gaussians", "smoke", fixed={"variant": variant})
        chosen = choose(ablation, ["tiny_grid"], uri)[variant]
        assert chosen.run_ids == (run.info.run_id,) and chosen.kl == pytest.approx(run.data.metrics["kl"])
        assert chosen.betas == {b: float(run.data.params[b]) for b in BETAS}

    common = [
        "--space",
        "ablation_priors",
        "--budget",
        "smoke",
        "--seeds",
        "1",
        "--betas-from",
        "tiny_grid",
        "--storage",
        str(tmp_path / "ray_results"),
        "--tracking-uri",
        uri,
    ]
    assert main(common) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "variant 'vae-standard'" in errors[0] and "tiny_grid" in errors[0], errors
    name = "ablation_priors-8gaussians-smoke"
    assert not (tmp_path / "ray_results" / name).exists()

    assert main([*common, "--set", "variant=sintro-mog-LC-IP"]) == 0
    out = capsys.readouterr().out
    assert "trials finished: 1, failed: 0" in out, out[-3000:]
    source = lowest["sintro-mog-LC-IP"]
    [run] = runs_of(uri, name)
    assert all(run.data.params[b] == source.data.params[b] for b in BETAS) and run.data.params["protocol"] == "paper"
    assert run.data.tags["betas_from"].startswith(f"tiny_grid: run {source.info.run_id} (kl ")
    table = build_table(load_study(name, uri))
    beta_kl = float(source.data.params["beta_kl"])
    assert table.cells()["β (rec, kl, neg)"].tolist() == [f"0.2, {beta_kl:g}, 0.9"]
    assert "Protocol: paper (reproduces the paper code's quirks)." in table.to_markdown()


IMAGE_METRICS = (
    "rec_test",
    "fd_classifier_gen",
    "fd_classifier_rec",
    "precision",
    "recall",
    "svm_few",
    "svm_many",
    "knn_few",
    "knn_many",
    "assignment_entropy",
    "active_modes",
)


def test_image_study_on_digits_lands_image_metrics_in_sqlite(local_ray, tmp_path, capsys):
    """The image ablation on digits at the smoke budget through the CLI, narrowed to N(0,I) (which runs at λ = 0
    only) × 2 seeds, one at a time (--max-concurrent 1, which Tune ignores for a narrowed grid unless the grid's
    generator gets it), under the clean protocol (the space's default is paper) with every image metric also at epoch
    1, half a GPU a trial: both runs land in MLflow with the image metrics as series over epochs, the grids as
    artifacts and the resources as a tag; the report tabulates them with the λ selection named after what it
    measured."""
    from analysis.loading import load_study
    from analysis.report import build_table, write_report

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    code = main(
        [
            "--space",
            "ablation_images",
            "--dataset",
            "digits",
            "--budget",
            "smoke",
            "--set",
            "variant=standard",
            "--set",
            "metric_epochs=1",
            "--set",
            "protocol=clean",
            "--seeds",
            "2",
            "--gpus-per-trial",
            "0.5",
            "--max-concurrent",
            "1",
            "--storage",
            str(tmp_path / "ray_results"),
            "--tracking-uri",
            uri,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "trials finished: 2, failed: 0" in out and "best by fd_classifier_gen" in out, out[-3000:]
    name = "ablation_images-digits-smoke"
    runs = runs_of(uri, name)
    assert len(runs) == 2
    first, second = sorted(runs, key=lambda r: r.info.start_time)  # --max-concurrent 1 on a narrowed grid:
    assert first.info.end_time <= second.info.start_time  # one after the other, though both fit on the cluster
    client = MlflowClient(uri)
    for run in runs:
        p, tags = run.data.params, run.data.tags
        assert run.info.status == "FINISHED" and p["variant"] == "standard" and p["prior"] == "standard"
        assert float(p["responsibility_weight"]) == 0.0 and p["protocol"] == "clean" and p["metric_epochs"] == "[1]"
        assert Path(p["data_dir"]).is_absolute()
        assert tags["ray_resources"] == "CPU=1, GPU=0.5" and tags["space"] == "ablation_images"
        for metric in IMAGE_METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert steps == [1, 2], (metric, steps)
        assert not any(m.startswith("fid") for m in run.data.metrics)  # no Inception weights: never called FID
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"samples.png", "reconstructions.png", "figure.png", "metrics.json"} <= artifacts

    study = load_study(name, uri)
    assert study.metric == "fd_classifier_gen" and study.factors == ["variant", "responsibility_weight"]
    table = build_table(study, select="lambda")
    assert table.metrics == [
        "assignment_entropy",
        "fd_classifier_gen",
        "fd_classifier_rec",
        "precision",
        "recall",
        "svm_few",
        "svm_many",
        "knn_few",
        "knn_many",
    ]
    assert "fd_classifier_gen" in table.selection and "not an FID" in table.selection
    assert int(table.stats["n"].iloc[0]) == 2 and table.decimals == 3
    index = write_report(study, tmp_path / "report", select="lambda")
    text = index.read_text()
    assert "fd_classifier_gen ↓" in text and "| precision ↑ |" in text and "protocol: clean" in text


def test_study_against_an_mlflow_server(tmp_path):
    """The CLI with --tracking-uri of an `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1."""
    env = child_env(tmp_path)
    port = free_port()
    server = start(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        tmp_path,
        env,
        tmp_path / "mlflow-server.log",
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(uri + "/health", 90, server)
        done = study_cli(
            [
                "--space",
                "ablation_regularizers",
                "--budget",
                "smoke",
                "--set",
                "clip=adaptive",
                "--set",
                "responsibility_weight=0",
                "--seeds",
                "2",
                "--tracking-uri",
                uri,
            ],
            tmp_path,
            env,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"open {uri}" in done.stdout and "trials finished: 2, failed: 0" in done.stdout
        runs = runs_of(uri, "ablation_regularizers-8gaussians-smoke")
        assert len(runs) == 2
        client = MlflowClient(uri)
        for run in runs:
            assert_complete_run(client, run, "ablation_regularizers", "ablation_regularizers-8gaussians-smoke")
        assert any((tmp_path / "server-artifacts").rglob("figure.png"))  # uploaded through the server
        assert not (tmp_path / "mlruns.db").exists()
    finally:
        stop(server, signal.SIGTERM)


def tune_snapshot(experiment: Path) -> tuple[set[str], set[str]]:
    """(finished, checkpointed but unfinished) trial ids in Tune's last experiment snapshot: what --resume restores
    from. Checkpoints on disk run ahead of it, so a test that kills the driver must wait for the snapshot."""
    try:
        trials = ExperimentAnalysis(str(experiment)).trials
    except Exception:  # not written yet, or caught mid-write
        return set(), set()
    done = {t.trial_id for t in trials if t.status == "TERMINATED"}
    checkpointed = {
        t.trial_id
        for t in trials
        if t.trial_id not in done
        and t.checkpoint is not None
        and not any(Path(t.path).glob(f"checkpoint_*/{FINAL_FILE}"))
    }
    return done, checkpointed


def wait_for_snapshot(experiment: Path, driver: subprocess.Popen, log: Path, ready) -> tuple[set[str], set[str]]:
    """Tune's snapshot (finished, checkpointed) once ready(finished, checkpointed) holds."""
    deadline = time.time() + 180
    while time.time() < deadline and driver.poll() is None:
        done, checkpointed = tune_snapshot(experiment)
        if ready(done, checkpointed):
            return done, checkpointed
        time.sleep(0.2)
    pytest.fail(f"Tune's snapshot never got ready:\n{log.read_text()[-3000:]}")


def test_interrupted_then_killed_study_resumes_each_trial_once(tmp_path):
    """Ctrl-C once a trial finished and another has checkpoints: exit 130, the running trial counted as interrupted
    (not ranked) and the study's own resume command. That command, killed with -9 (driver and its local Ray) once
    one more trial finished; --resume again: every trial has one MLflow run, finished, its history whole (nothing
    lost, nothing logged twice); trials finished before a stop kept as they were, the others resumed from their
    checkpoints."""
    env = child_env(tmp_path)
    args = [
        "--space",
        "ablation_regularizers",
        "--budget",
        "smoke",
        "--set",
        "responsibility_weight=0",
        "--set",
        "iterations=200",
        "--seeds",
        "2",
        "--max-concurrent",
        "1",
    ]
    experiment = tmp_path / "ray_results" / "ablation_regularizers-8gaussians-smoke"
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    first = start([sys.executable, "-m", "study.run", *args], tmp_path, env, tmp_path / "first.log")
    try:
        _, checkpointed = wait_for_snapshot(experiment, first, tmp_path / "first.log", lambda d, c: d and c)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in a terminal: the driver and its Ray's processes
        code = first.wait(timeout=120)
    finally:
        stop(first)
    out = (tmp_path / "first.log").read_text()
    assert code == 130, out[-3000:]
    assert ", interrupted: " in out and "Tuner.restore(" not in out, out[-3000:]
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"study '{experiment.name}' interrupted with "))
    resume = shlex.split(lines[at + 1])
    assert resume == [
        "python",
        "-m",
        "study.run",
        "--resume",
        "--name",
        experiment.name,
        "--storage",
        str(tmp_path / "ray_results"),
    ], lines[at:]
    before = {r.data.tags["trial_id"]: r for r in runs_of(uri, experiment.name)}
    done_first = {t for t, r in before.items() if r.info.status == "FINISHED"}
    assert done_first and len(done_first) < 4

    second = start([sys.executable, *resume[1:]], tmp_path, env, tmp_path / "second.log")
    try:
        wait_for_snapshot(experiment, second, tmp_path / "second.log", lambda d, c: len(d) > len(done_first) and c)
    finally:
        stop(second)
    record = json.loads((experiment / DRIVER_FILE).read_text())  # what the next --resume waits for
    assert record["driver"]["pid"] == second.pid and record["workers"], record
    before = {r.data.tags["trial_id"]: r for r in runs_of(uri, experiment.name)}
    done_before = {t for t, r in before.items() if r.info.status == "FINISHED"}
    assert done_first < done_before and len(done_before) < 4

    resumed = study_cli(["--resume", "--name", experiment.name], tmp_path, env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "trials finished: 4, failed: 0;" in resumed.stdout

    after = {r.data.tags["trial_id"]: r for r in runs_of(uri, experiment.name)}
    assert len(after) == 4 and all(r.info.status == "FINISHED" for r in after.values())
    client = MlflowClient(uri)
    for trial_id, run in after.items():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "kl")]
        assert steps == list(range(20, 201, 20)), (trial_id, steps)  # nothing lost, nothing logged twice
        if trial_id in done_before:
            assert run.info.end_time == before[trial_id].info.end_time
    interrupted = checkpointed - done_first  # less any that finished in the instant before the Ctrl-C
    assert interrupted and all(int(after[t].data.tags["resumed_from_iteration"]) >= 20 for t in interrupted)
    assert all("resumed_from_iteration" not in after[t].data.tags for t in done_first)


def test_killed_searched_study_resumes_its_optuna_search(tmp_path):
    """A searched space (Optuna TPE + ASHA), the driver and its Ray killed with -9 once a trial finished and the
    next has a checkpoint; --resume continues the same Optuna study: --samples trials in all, the finished trial's
    point kept, the interrupted one resumed at its own point (no trial lost, none sampled twice), and every
    Optuna trial told the kl its MLflow run ends with."""
    import optuna

    env = child_env(tmp_path)
    args = [
        "--space",
        "betas",
        "--budget",
        "smoke",
        "--samples",
        "4",
        "--set",
        "iterations=200",
        "--max-concurrent",
        "1",
    ]
    name = "betas-8gaussians-smoke"
    experiment, uri = tmp_path / "ray_results" / name, f"sqlite:///{tmp_path}/mlruns.db"
    first = start([sys.executable, "-m", "study.run", *args], tmp_path, env, tmp_path / "first.log")
    try:
        done, checkpointed = wait_for_snapshot(experiment, first, tmp_path / "first.log", lambda d, c: d and c)
    finally:
        stop(first)
    study_id = json.loads((experiment / "study.json").read_text())["study"]["study_id"]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    told = optuna.load_study(study_name=f"{name}-{study_id}", storage=storage).trials
    assert 2 <= len(told) < 4 and told[0].state == optuna.trial.TrialState.COMPLETE
    before = {r.data.tags["trial_id"]: r.data.params for r in runs_of(uri, name)}

    resumed = study_cli(["--resume", "--name", name], tmp_path, env, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "trials finished: 4, failed: 0;" in resumed.stdout or ", stopped by ASHA: " in resumed.stdout

    runs = runs_of(uri, name)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    trials = optuna.load_study(study_name=f"{name}-{study_id}", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [t.number for t in trials] == [0, 1, 2, 3]
    points = sorted((t.params["beta_rec"], t.params["beta_kl"]) for t in trials)
    logged = sorted((float(r.data.params["beta_rec"]), float(r.data.params["beta_kl"])) for r in runs)
    assert np.allclose(points, logged, rtol=1e-6) and len(set(points)) == 4
    assert sorted(t.value for t in trials) == pytest.approx(sorted(r.data.metrics["kl"] for r in runs))
    for trial_id in done | checkpointed:  # the points sampled before the kill are the ones that ran to the end
        after = next(r.data.params for r in runs if r.data.tags["trial_id"] == trial_id)
        assert after["beta_kl"] == before[trial_id]["beta_kl"] and after["beta_rec"] == before[trial_id]["beta_rec"]
    resumed_runs = [r for r in runs if r.data.tags["trial_id"] in checkpointed - done]
    assert resumed_runs and all(int(r.data.tags["resumed_from_iteration"]) >= 20 for r in resumed_runs)


def test_ray_job_submit_and_address_to_a_local_head(tmp_path):
    """`ray start --head` on 127.0.0.1; the README's `ray job submit` of the study, then --address from a driver
    outside the project folder: both finish and land in MLflow. Also probes the health endpoints that
    docker/docker-compose.yml checks on the head and on each node."""
    env = child_env(tmp_path)
    gcs, dashboard, client_port, agent = free_port(), free_port(), free_port(), free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))  # Ray's socket paths must stay short
    head = start(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(client_port),
            "--dashboard-agent-listen-port",
            str(agent),
            "--num-cpus",
            "2",
            "--temp-dir",
            str(ray_tmp),
            "--disable-usage-stats",
        ],
        tmp_path,
        env,
        tmp_path / "head.log",
    )
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    try:
        wait_for_http(f"http://127.0.0.1:{dashboard}/api/gcs_healthz", 120, head)
        wait_for_http(f"http://127.0.0.1:{agent}/api/local_raylet_healthz", 60, head)
        excludes = json.dumps(
            {"excludes": [".venv", ".git", "ray_results", "mlartifacts", "mlruns.db", "data", "runs", "notebooks"]}
        )
        submit = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            f"http://127.0.0.1:{dashboard}",
            "--working-dir",
            ".",
            "--runtime-env-json",
            excludes,
            "--",
            "python",
            "-m",
            "study.run",
            "--space",
            "ablation_regularizers",
            "--budget",
            "smoke",
            "--set",
            "clip=none",
            "--set",
            "responsibility_weight=0",
            "--seeds",
            "2",
            "--storage",
            str(tmp_path / "ray_results"),
            "--tracking-uri",
            uri,
            "--name",
            "job",
        ]
        for _ in range(60):  # the dashboard answers before the node's job agent has registered
            job = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            if "No available agent" not in job.stdout + job.stderr:
                break
            time.sleep(1)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "trials finished: 2, failed: 0" in job.stdout

        outside = tmp_path / "elsewhere"
        outside.mkdir()
        direct = study_cli(
            [
                "--space",
                "ablation_regularizers",
                "--budget",
                "smoke",
                "--set",
                "clip=none",
                "--set",
                "responsibility_weight=0",
                "--seeds",
                "1",
                "--address",
                f"127.0.0.1:{gcs}",
                "--storage",
                str(tmp_path / "ray_results"),
                "--tracking-uri",
                uri,
                "--name",
                "direct",
            ],
            outside,
            {**env, "PYTHONPATH": str(ROOT)},
        )
        assert direct.returncode == 0, direct.stdout[-3000:] + direct.stderr[-3000:]
        assert "trials finished: 1, failed: 0" in direct.stdout
    finally:
        stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for name, count in (("job", 2), ("direct", 1)):
        runs = runs_of(uri, name)
        assert len(runs) == count and all(r.info.status == "FINISHED" for r in runs)


def wait_for_nodes(address: str, count: int, env: dict[str, str], timeout: float) -> None:
    """Until `ray status` lists `count` active nodes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = subprocess.run(
            [str(BIN / "ray"), "status", "--address", address], env=env, capture_output=True, text=True, timeout=60
        )
        active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        if status.returncode == 0 and active.count("node_") >= count:
            return
        time.sleep(1)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes in {timeout} s: {status.stdout}")


def test_study_on_two_nodes_survives_losing_one(tmp_path):
    """A head and a second node (`ray start --address`) on this machine, one CPU each: the study's two trials run one
    per node. The second node's raylet is killed (-9) mid-trial: its trial resumes from its last checkpoint on the
    surviving node (--max-failures), and MLflow ends with one FINISHED run per trial, no step lost or logged twice."""
    import psutil

    env = child_env(tmp_path)
    gcs = free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))  # Ray's socket paths must stay short
    node_args = ["--block", "--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    head = start(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--port",
            str(gcs),
            "--include-dashboard",
            "false",
            "--temp-dir",
            str(ray_tmp),
            *node_args,
        ],
        tmp_path,
        env,
        tmp_path / "head.log",
    )
    second = None
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    study = None
    try:
        second = start(
            [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs}", *node_args],
            tmp_path,
            env,
            tmp_path / "second.log",
        )
        wait_for_nodes(f"127.0.0.1:{gcs}", 2, env, 120)
        study = start(
            [
                sys.executable,
                "-m",
                "study.run",
                "--space",
                "ablation_regularizers",
                "--budget",
                "smoke",
                "--set",
                "clip=none",
                "--set",
                "responsibility_weight=0",
                "--set",
                "iterations=1500",
                "--set",
                "eval_every=100",
                "--seeds",
                "2",
                "--max-failures",
                "2",
                "--address",
                f"127.0.0.1:{gcs}",
                "--tracking-uri",
                uri,
                "--storage",
                str(tmp_path / "ray_results"),
                "--name",
                "two-nodes",
            ],
            tmp_path,
            env,
            tmp_path / "study.log",
        )
        deadline = time.time() + 240
        while True:  # both trials running, one per node, each past its first checkpoint
            assert time.time() < deadline and study.poll() is None, (tmp_path / "study.log").read_text()[-3000:]
            try:
                runs = runs_of(uri, "two-nodes")
            except AttributeError:  # no experiment yet
                runs = []
            client = MlflowClient(uri)
            running = [
                r
                for r in runs
                if r.info.status == "RUNNING"
                and "ray_node" in r.data.tags
                and len(client.get_metric_history(r.info.run_id, "kl")) >= 2
            ]
            if len(running) == 2:
                break
            time.sleep(0.2)
        nodes = {r.data.tags["trial_id"]: r.data.tags["ray_node"] for r in running}
        assert len(set(nodes.values())) == 2, nodes  # the study spread over both nodes
        raylet = next(p for p in psutil.Process(second.pid).children(recursive=True) if p.name() == "raylet")
        raylet.kill()
        code = study.wait(timeout=300)
        out = (tmp_path / "study.log").read_text()
        assert code == 0, out[-3000:]
        assert "trials finished: 2, failed: 0" in out, out[-3000:]
    finally:
        for proc in (study, second, head):
            if proc is not None:
                stop(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    runs = {r.data.tags["trial_id"]: r for r in runs_of(uri, "two-nodes")}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    client = MlflowClient(uri)
    for run in runs.values():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "kl")]
        assert steps == list(range(100, 1501, 100)), steps  # nothing lost, nothing logged twice
    moved = [t for t, r in runs.items() if r.data.tags["ray_node"] != nodes[t]]
    assert len(moved) == 1, {t: (nodes[t], r.data.tags["ray_node"]) for t, r in runs.items()}
    survivor = next(t for t in runs if t not in moved)
    resumed = runs[moved[0]]
    assert resumed.data.tags["ray_node"] == nodes[survivor]  # the lost node's trial now ran on the head
    assert int(resumed.data.tags["resumed_from_iteration"]) >= 100  # from its checkpoint, not from the start
    assert "resumed_from_iteration" not in runs[survivor].data.tags
