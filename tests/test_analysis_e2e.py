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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true",
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "RAY_USAGE_STATS_ENABLED": "0"}
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    # Two trials: clip none / adaptive at λ = 0, seed 0.
    study = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "ablation_regularizers", "--budget", "smoke",
         "--set", "responsibility_weight=0", "--seeds", "1", "--name", STUDY, "--tracking-uri", uri,
         "--storage", str(tmp_path / "ray_results")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    assert "trials finished: 2, failed: 0" in study.stdout

    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--study", STUDY, "--tracking-uri", uri,
                             "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
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

    notebook = nbformat.read(ROOT / "notebooks" / "ablation.ipynb", as_version=4)
    for key, value in {"PRIORSTUDY_TRACKING_URI": uri, "PRIORSTUDY_STUDY": STUDY, "MPLCONFIGDIR": str(tmp_path / "mpl"),
                       "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "factors: ['clip']" in printed and "'finished': 2" in printed
