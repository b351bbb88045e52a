import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from study import ray_auth

# Every Ray of the tests runs with token auth, as a study does, on a token of this session (never ~/.ray's).
os.environ.setdefault("RAY_AUTH_MODE", "token")
if "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
    _token_dir = tempfile.mkdtemp(prefix="priorstudy-ray-auth-")
    atexit.register(shutil.rmtree, _token_dir, ignore_errors=True)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(_token_dir) / "auth_token")
ray_auth.ensure_token()
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/priorstudy-mpl")


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored():
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI (for subprocesses), which is the default store of
    study.run: one test's store must not become the default of a later test's studies (it did, in CI)."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(saved)  # None unsets the variable too
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(autouse=True)
def _two_threads():
    """Tests run on 2 cores: keep torch from oversubscribing when pytest and Ray share the machine."""
    torch.set_num_threads(2)
