import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/priorstudy-mpl")


@pytest.fixture(autouse=True)
def _two_threads():
    """Tests run on 2 cores: keep torch from oversubscribing when pytest and Ray share the machine."""
    torch.set_num_threads(2)
