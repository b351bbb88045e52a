"""`python -m study.run`: listing, dry runs, value parsing, and every request error caught before any trial."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import ray

from core.overrides import parse_assignments
from search_spaces import design, get
from search_spaces.space import resolve_trial
from study.betas_from import BetasError, choose
from study.run import StudyError, check_resources, main, parse_seeds, summarize
from study.tracking import TrackingError, absolute_tracking_uri, check_tracking_uri, mlflow_ui_hint
from study.trainable import tune_metrics


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def run_cli(tmp_path: Path, capsys, *args: str) -> tuple[int, str, str]:
    code = main(
        ["--storage", str(tmp_path / "ray_results"), "--tracking-uri", f"sqlite:///{tmp_path}/mlruns.db", *args]
    )
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_nothing_started(tmp_path: Path) -> None:
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlruns.db").exists()
    assert not ray.is_initialized()


def test_list_names_every_space_with_its_trial_count(tmp_path, capsys):
    code, out, _ = run_cli(tmp_path, capsys, "--list")
    assert code == 0
    assert "ablation_regularizers    grid, 8 trials" in out
    assert "ablation_priors          grid, 40 trials" in out
    assert "betas                    Optuna+ASHA, 24 samples" in out
    assert "ablation_images          grid, 99 trials" in out
    for name in ("betas_grid", "mixture_components", "clipping"):
        assert name in out


def test_dry_run_prints_the_resolved_trials_and_starts_nothing(tmp_path, capsys):
    code, out, _ = run_cli(tmp_path, capsys, "--space", "ablation_regularizers", "--seeds", "0,3", "--dry-run")
    assert code == 0
    assert "16 trials, grid search" in out and "budget quick" in out and "iterations=5000" in out
    assert "trial  15: clip=adaptive, responsibility_weight=100.0, seed=3" in out
    code, out, _ = run_cli(tmp_path, capsys, "--space", "betas", "--budget", "smoke", "--samples", "5", "--dry-run")
    assert code == 0 and "5 trials, Optuna TPE + ASHA" in out and "beta_rec ~ loguniform(0.05, 1.0)" in out
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--space", "ablation_regularizer"],
            "unknown search space 'ablation_regularizer' (did you mean 'ablation_regularizers'? "
            "known: ablation_images,",
        ),
        (["--space", "betas", "--set", "beta_kl=-0.5"], "beta_kl = -0.5 is out of range (expected >= 0)"),
        (
            ["--space", "betas", "--set", "prior=mogg"],
            "unknown prior 'mogg' (expected: standard, mog, vamp, vamp_to_mog)",
        ),
        (["--space", "betas", "--set", "lr_typo=1"], "unknown config key(s) ['lr_typo']"),
        (["--space", "betas", "--dataset", "moons"], "unknown dataset 'moons'"),
        (["--space", "betas", "--seeds", "0-"], "--seeds '0-' is not N"),
        (["--space", "betas", "--set", "lr"], "--set 'lr' is not KEY=VALUE"),
        (["--space", "ablation_priors", "--samples", "3"], "--samples applies to searched spaces"),
        (["--space", "ablation_priors", "--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
        (["--space", "ablation_priors", "--resume"], "no study to resume at"),
        (["--space", "ablation_priors", "--address", "10.0.0.1"], "--address '10.0.0.1' is not HOST:PORT"),
        (
            ["--space", "ablation_priors", "--tracking-uri", "sqlite:////nonexistent/dir/x.db"],
            "folder /nonexistent/dir does not exist",
        ),
        (["--space", "ablation_regularizers", "--betas-from", "grid"], "but the space has no variants"),
        (
            ["--space", "ablation_images", "--dataset", "digits", "--betas-from", "grid"],
            "which also varies responsibility_weight (fix it with --set KEY=VALUE)",
        ),
        (
            ["--space", "ablation_priors", "--set", "beta_kl=0.5", "--betas-from", "grid"],
            "--set beta_kl conflicts with --betas-from",
        ),
        (["--space", "ablation_priors", "--betas-from", "grid"], "--betas-from: no MLflow store at sqlite:///"),
    ],
)
def test_bad_requests_fail_clearly_before_any_trial(tmp_path, capsys, args, message):
    code, _, err = run_cli(tmp_path, capsys, *args)
    assert code == 2 and message in err, err
    assert_nothing_started(tmp_path)


def test_image_study_dry_run_reads_data_from_an_absolute_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(
        tmp_path,
        capsys,
        "--space",
        "ablation_images",
        "--dataset",
        "digits",
        "--budget",
        "smoke",
        "--data-dir",
        "images",
        "--dry-run",
    )
    assert code == 0, out
    assert "99 trials, grid search" in out and "metric fd_classifier_gen (min)" in out
    assert f"data_dir={tmp_path / 'images'}," in out  # trials run in their own folders: never a relative path
    assert "trial   0: variant=standard, responsibility_weight=0.0, seed=0" in out
    assert "variant=standard, responsibility_weight=1.0" not in out  # N(0,I) runs at lambda = 0 only
    assert_nothing_started(tmp_path)


def test_missing_image_data_or_inception_weights_fail_before_any_trial(tmp_path, capsys):
    missing = tmp_path / "no-data"
    code, _, err = run_cli(
        tmp_path,
        capsys,
        "--space",
        "ablation_images",
        "--dataset",
        "fmnist",
        "--budget",
        "smoke",
        "--data-dir",
        str(missing),
    )
    assert code == 2 and f"dataset 'fmnist' not found in {missing / 'FashionMNIST' / 'raw'}" in err, err
    assert "train-images-idx3-ubyte" in err and "--download" in err
    assert_nothing_started(tmp_path)
    code, _, err = run_cli(
        tmp_path,
        capsys,
        "--space",
        "ablation_images",
        "--dataset",
        "digits",
        "--budget",
        "smoke",
        "--inception-weights",
        str(tmp_path / "missing.pth"),
    )
    assert code == 2 and f"FID Inception weights not found at '{tmp_path / 'missing.pth'}'" in err, err
    assert_nothing_started(tmp_path)


def test_trials_asking_for_more_than_the_cluster_has_are_refused():
    check_resources({"CPU": 2.0, "GPU": 1.0}, cpus_per_trial=1, gpus_per_trial=0.25)
    check_resources({"CPU": 2.0}, cpus_per_trial=2, gpus_per_trial=0)
    with pytest.raises(StudyError, match=r"--gpus-per-trial 0.5: the Ray cluster has 0 GPUs"):
        check_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=0.5)
    with pytest.raises(StudyError, match=r"--cpus-per-trial 4: the Ray cluster has 2 CPUs"):
        check_resources({"CPU": 2.0}, cpus_per_trial=4, gpus_per_trial=0)


def test_unreachable_ray_address_or_tracking_server_fail_before_any_trial(tmp_path, capsys):
    port = closed_port()
    code, _, err = run_cli(tmp_path, capsys, "--space", "ablation_regularizers", "--address", f"127.0.0.1:{port}")
    assert code == 2 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err
    assert_nothing_started(tmp_path)
    code, _, err = run_cli(
        tmp_path, capsys, "--space", "ablation_regularizers", "--tracking-uri", f"http://127.0.0.1:{port}"
    )
    assert code == 2 and f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in err
    assert_nothing_started(tmp_path)


def test_an_address_from_a_machine_that_is_no_ray_node_is_refused_in_seconds_and_points_to_ray_jobs(tmp_path, capsys):
    """Something answers at the address, but no Ray node runs on this machine (the state of this test process: the
    module starts no Ray): Ray 2.60 would wait 60 s and fail; the study says to submit it as a Ray Job."""
    import time

    from study.run import runs_a_ray_node

    assert not runs_a_ray_node()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        code, _, err = run_cli(tmp_path, capsys, "--space", "ablation_regularizers", "--address", f"127.0.0.1:{port}")
    assert code == 2 and time.monotonic() - started < 30
    assert "this machine is not a node of the Ray cluster" in err
    assert "ray job submit --address http://127.0.0.1:8265" in err
    assert_nothing_started(tmp_path)


def test_an_existing_study_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "ray_results" / "ablation_regularizers-8gaussians-quick").mkdir(parents=True)
    code, _, err = run_cli(tmp_path, capsys, "--space", "ablation_regularizers")
    assert code == 2 and "already exists" in err and "--resume" in err
    assert not ray.is_initialized()


def test_space_is_required(capsys):
    assert main([]) == 2
    assert "--space is required" in capsys.readouterr().err


def test_seed_and_value_parsing():
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("0,3,7") == (0, 3, 7)
    assert parse_seeds("2-4") == (2, 3, 4)
    assert parse_seeds(None) is None
    with pytest.raises(StudyError):
        parse_seeds("0")
    assert parse_assignments(
        [
            "clip=none",
            "clip_logvar_min=none",
            "lr=1e6",
            "iterations=200",
            "beta_rec=1",
            "learnable_weights=false",
            "lr_milestones=[10,20]",
            "variant=vae-vamp",
        ]
    ) == {
        "clip": "none",
        "clip_logvar_min": None,
        "lr": 1e6,
        "iterations": 200,
        "beta_rec": 1.0,
        "learnable_weights": False,
        "lr_milestones": [10, 20],
        "variant": "vae-vamp",
    }


def test_tracking_uris_become_absolute_and_the_ui_hint_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///mlruns.db") == f"sqlite:///{tmp_path}/mlruns.db"
    assert absolute_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert absolute_tracking_uri("store") == (tmp_path / "store").as_uri()
    with pytest.raises(TrackingError, match="names no database file"):
        absolute_tracking_uri("sqlite://")
    check_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    assert mlflow_ui_hint(f"sqlite:///{tmp_path}/m.db", "3") == (
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/m.db, then open "
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert mlflow_ui_hint("http://h:5000/", "3").startswith(
        "open http://h:5000/#/experiments/3/runs?workflowType=machine_learning"
    )


def test_tune_metrics_lead_with_the_study_metric_and_drop_done():
    report = {"loss_encoder": 1.0, "rec": 2.0, "kl": 3.0, "iteration": 20, "in_game": True, "done": True}
    metrics = tune_metrics(report, "kl")
    assert list(metrics)[:2] == ["kl", "iteration"] and "done" not in metrics and metrics["in_game"] is True


def test_betas_from_picks_the_lowest_seed_mean_kl_of_finished_runs_of_the_same_configuration(tmp_path):
    """Grid runs logged as trials log them: the β point with the lowest mean kl over its seeds wins; failed and
    early-stopped runs, and runs of another configuration, dataset or budget, never do."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri)
    grid = design(get("betas_grid"), "8gaussians", "smoke").study_config()
    experiment = client.create_experiment("grid")

    def log(beta_kl, kl, seed=0, status="FINISHED", variant="sintro-standard", budget="smoke", **tags):
        config = resolve_trial(
            grid, {"variant": variant, "beta_rec": 0.2, "beta_kl": beta_kl, "beta_neg_multiple": 2, "seed": seed}
        )
        run = client.create_run(experiment, tags={"budget": budget, **tags})
        client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in config.to_dict().items()],
            metrics=[Metric("kl", kl, 0, 60)],
        )
        client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    best = [log(0.3, 2.0, seed=0), log(0.3, 4.0, seed=1)]  # mean 3.0
    log(0.1, 1.0, seed=0), log(0.1, 9.0, seed=1)  # mean 5.0, though its seed 0 is the lowest single run
    log(0.5, 0.5, status="FAILED")
    log(0.8, 0.5, stopped_early="true")
    log(0.05, 0.1, variant="sintro-mog-LC-IP")
    log(1.0, 0.1, budget="quick")

    ablation = design(get("ablation_priors"), "8gaussians", "smoke", fixed={"variant": "sintro-standard"})
    assert "MLFLOW_TRACKING_URI" not in os.environ
    chosen = choose(ablation, ["grid"], uri)["sintro-standard"]
    assert "MLFLOW_TRACKING_URI" not in os.environ  # else it would be the default store of every later study
    assert chosen.betas == {"beta_rec": 0.2, "beta_kl": 0.3, "beta_neg": 0.6}
    assert sorted(chosen.run_ids) == sorted(best) and chosen.kl == 3.0 and chosen.source.startswith("grid: run ")
    with pytest.raises(BetasError, match="variant 'sintro-mog': no finished run with kl in --betas-from grid"):
        choose(design(get("ablation_priors"), "8gaussians", "smoke", fixed={"variant": "sintro-mog"}), ["grid"], uri)
    with pytest.raises(BetasError, match=r"--betas-from 'gird': no study of that name .* \(studies there: grid\)"):
        choose(ablation, ["gird"], uri)


def test_summary_names_the_finished_trials_that_did_not_learn_8gaussians(tmp_path):
    from types import SimpleNamespace

    d = design(get("learnable_prior"), "8gaussians", "smoke")
    learned = {"kl": 2.0, "near_mode": 0.95, "modes_covered": 8}
    string = {"kl": 40.0, "near_mode": 0.45, "modes_covered": 8}
    results = [
        SimpleNamespace(error=None, metrics=m, config={"variant": "standard", "seed": s}, path=f"/r/trial_{s}")
        for s, m in enumerate((learned, string))
    ]
    text = summarize(results, d, {"name": "s", "tracking_uri": "sqlite:///x.db"}, tmp_path)
    assert "trials finished: 2, failed: 0" in text
    assert "did not learn the data (1 of 2" in text and "trial_1: 8 modes covered, 45% of samples near" in text
    assert "trial_0:" not in text


def test_mlflows_own_tracking_variable_is_the_default_of_the_study_and_its_report(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI, as MLflow users set it, is where study.run, analysis.report and load_study look unless
    --tracking-uri says otherwise; without it, ./mlruns.db."""
    from analysis.loading import StudyNotFound, load_study
    from analysis.report import build_parser as report_parser
    from study.run import build_parser, study_tracking_uri

    monkeypatch.chdir(tmp_path)
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    assert study_tracking_uri(build_parser().parse_args([])) == elsewhere
    assert study_tracking_uri(build_parser().parse_args(["--tracking-uri", "sqlite:///given.db"])) == (
        f"sqlite:///{tmp_path}/given.db"
    )
    assert report_parser().parse_args(["--study", "s"]).tracking_uri == elsewhere
    with pytest.raises(StudyNotFound, match=r"elsewhere\.db"):
        load_study("s")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert study_tracking_uri(build_parser().parse_args([])) == f"sqlite:///{tmp_path}/mlruns.db"
    assert report_parser().parse_args(["--study", "s"]).tracking_uri == "sqlite:///mlruns.db"


def test_a_trial_that_finishes_on_a_retry_loses_the_failure_of_its_earlier_attempt(tmp_path):
    """Tune's max_failures retries a crashed trial in the same MLflow run: once it finishes, the run is FINISHED and
    the failure_reason of the attempt before is gone (a tag left behind would call a good trial failed)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from study.tracking import TrialRun

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("retry")).info.run_id
    client.set_tag(run_id, "failure_reason", "RuntimeError: worker died")
    client.set_terminated(run_id, status="FAILED")
    mlflow.set_tracking_uri(uri)
    mlflow.start_run(run_id=run_id)  # as TrialRun.open reopens the trial's run
    TrialRun(mlflow, uri, run_id, -1).finish()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
