"""End to end: a real small study through `python -m study.run` (Ray, MLflow sqlite, smoke budget), then
`python -m analysis.report` on its store and the notebook executed against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
STUDY = "analysis-e2e"


def test_study_to_report_and_notebook(tmp_path, monkeypatch):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    # Two trials: clip none / adaptive at λ = 0, seed 0.
    study = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.run",
            "--space",
            "ablation_regularizers",
            "--budget",
            "smoke",
            "--set",
            "responsibility_weight=0",
            "--seeds",
            "1",
            "--name",
            STUDY,
            "--tracking-uri",
            uri,
            "--storage",
            str(tmp_path / "ray_results"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    assert "trials finished: 2, failed: 0" in study.stdout

    out = tmp_path / "report"
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--study", STUDY, "--tracking-uri", uri, "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert f"report: {out / 'README.md'}" in report.stdout

    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 2 and runs["trial_id"].is_unique
    assert sorted(runs["clip"]) == ["adaptive", "none"] and runs["seed"].tolist() == [0, 0]
    assert (runs["state"] == "finished").all() and (runs["responsibility_weight"] == 0).all()
    history = pd.read_parquet(out / "history.parquet")
    assert sorted(history.loc[history["metric"] == "kl", "step"].unique()) == [20, 40, 60]
    index = (out / "README.md").read_text()
    assert "factors: clip (none, adaptive)" in index and "finished 2, failed 0" in index
    for name in ("by_clip", "learning_curves", "training_losses", "active_modes", "densities"):
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    table = pd.read_csv(out / "ablation.csv")
    assert table["kl_mean"].tolist() == [runs.loc[runs["clip"] == c, "kl"].iloc[0] for c in ("none", "adaptive")]
    assert_mlflow_holds_the_study(uri, runs)

    notebook = nbformat.read(ROOT / "notebooks" / "ablation.ipynb", as_version=4)
    for key, value in {
        "PRIORSTUDY_TRACKING_URI": uri,
        "PRIORSTUDY_STUDY": STUDY,
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "factors: ['clip']" in printed and "'finished': 2" in printed


def assert_mlflow_holds_the_study(uri: str, trials: pd.DataFrame) -> None:
    """One parent run for the study, FINISHED with its counts, best configuration, request and description; each
    trial's run nested under it, named by its configuration, with MLflow's source and commit tags; the report's
    files among the parent's artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(STUDY).experiment_id
    every = client.search_runs([experiment])
    parents = [r for r in every if r.data.tags.get("priorstudy.role") == "study"]
    assert len(parents) == 1 and len(every) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"study {STUDY}"
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["trials_failed"] == 0
    assert parent.data.tags["best.clip"] in ("none", "adaptive") and "best.kl" in parent.data.tags
    assert parent.data.params["space"] == "ablation_regularizers" and parent.data.params["trials"] == "2"
    assert "factors: clip (none, adaptive)" in parent.data.tags["mlflow.note.content"].lower()
    assert client.get_experiment(experiment).tags["mlflow.note.content"] == parent.data.tags["mlflow.note.content"]
    children = [r for r in every if r is not parent]
    assert sorted(r.info.run_id for r in children) == sorted(trials["run_id"])
    assert sorted(r.info.run_name for r in children) == ["clip=adaptive s=0", "clip=none s=0"]
    for run in every:
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "study.run"
        assert len(tags["mlflow.source.git.commit"]) == 40 and tags["git_commit"].startswith(
            tags["mlflow.source.git.commit"]
        )
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/README.md", "report/ablation.csv", "report/runs.parquet", "report/figures"} <= logged
