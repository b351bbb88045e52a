import atexit
import os
import shutil
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
def _two_threads():
    """Tests run on 2 cores: keep torch from oversubscribing when pytest and Ray share the machine."""
    torch.set_num_threads(2)
