"""The MLflow UI as a user opens it (headless Chromium on `mlflow ui`): a smoke study's parent run in the runs table
the study's printed URL opens, its trials nested under it, its description on its page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from mlflow_ui_check import UiCheckFailed, check_study_in_ui, chromium_binary  # noqa: E402


def have_chromium() -> bool:
    try:
        return bool(chromium_binary())
    except FileNotFoundError:
        return False


# `make test` installs Debian's chromium when it is missing (scripts/test-deps.sh); only a machine where that is not
# possible (no apt, no root) runs the suite without it.
@pytest.mark.skipif(not have_chromium(), reason="no chromium: scripts/test-deps.sh could not install it here")
def test_study_parent_run_and_nested_trials_appear_in_the_mlflow_ui(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    study = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.run",
            "--space",
            "learnable_prior",
            "--budget",
            "smoke",
            "--seeds",
            "1",
            "--tracking-uri",
            uri,
            "--storage",
            str(tmp_path / "ray_results"),
            "--name",
            "ui",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]
    printed = re.search(r"open http://127\.0\.0\.1:5000(\S+)", study.stdout).group(1)

    seen = check_study_in_ui(uri, "ui")
    assert seen["parent"] == "study ui"
    assert seen["trials"] == ["variant=learnable s=0", "variant=standard s=0"]
    assert seen["runs_url"].endswith(printed)  # the URL the study prints is the one that shows its runs


def test_the_check_fails_without_the_study_or_its_parent_run(tmp_path):
    """Without a study in the store there is nothing to open: the check says so instead of passing."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("flat")
    client.create_run(experiment, run_name="a trial without its study")
    with pytest.raises(UiCheckFailed, match="has no parent run"):
        check_study_in_ui(uri, "flat")
    with pytest.raises(UiCheckFailed, match="no MLflow experiment named 'missing'"):
        check_study_in_ui(uri, "missing")
