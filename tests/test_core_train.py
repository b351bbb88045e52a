"""train(): reports, checkpoints, exact resume, bad input, divergence, and a short real training."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.config import ConfigError, resolve_config
from core.errors import TrainingDiverged
from core.train import LossMonitor, train


def smoke(**overrides):
    return resolve_config("8gaussians", "smoke", eval_every=10, **overrides)


def test_reports_every_eval_and_final_has_all_metrics(tmp_path):
    reports = []
    final = train(smoke(), on_report=reports.append, out_dir=tmp_path)
    assert [r["iteration"] for r in reports] == [10, 20, 30, 40, 50, 60]
    assert reports[-1]["done"] and not reports[0]["done"]
    for key in (
        "loss_encoder",
        "loss_decoder",
        "rec",
        "kl_real",
        "kl_fake",
        "kl",
        "jsd",
        "gnelbo",
        "active_modes",
        "near_mode",
        "modes_covered",
    ):
        assert key in final and np.isfinite(final[key]), key
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["prior"] == "vamp_to_mog" and saved["kl"] == pytest.approx(final["kl"])
    assert np.load(tmp_path / "samples.npy").shape == (1000, 2)
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "checkpoint.pt").stat().st_size > 0


@pytest.mark.parametrize("resume_at", [15, 25, 45])  # before the MoG switch, between switch and game, in the game
def test_resumed_run_ends_with_the_same_parameters(resume_at):
    config = smoke(responsibility_weight=1.0)
    states = {}
    train(config, on_checkpoint=lambda s: states.__setitem__(s["unit"], s), checkpoint_every=5)
    resumed = {}
    train(
        config, resume=states[resume_at], on_checkpoint=lambda s: resumed.__setitem__(s["unit"], s), checkpoint_every=5
    )
    full, again = states[60]["game"], resumed[60]["game"]
    for player in ("encoder", "decoder", "prior"):
        for name, value in full[player].items():
            assert torch.equal(value, again[player][name]), f"{player}.{name}"


def test_same_seed_same_result_and_other_seed_differs():
    a, b, c = train(smoke(seed=3)), train(smoke(seed=3)), train(smoke(seed=4))
    assert a["loss_encoder"] == b["loss_encoder"] and a["kl"] == b["kl"]
    assert a["loss_encoder"] != c["loss_encoder"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prior": "mogg"}, "unknown prior 'mogg' (expected: standard, mog, vamp, vamp_to_mog)"),
        ({"clip": "hard"}, "unknown clip 'hard'"),
        ({"beta_kl": -0.1}, "beta_kl = -0.1 is out of range"),
        ({"num_components": 0}, "num_components = 0 is out of range"),
        ({"warmup": 100}, "warmup = 100 is longer than training (iterations = 60)"),
        ({"clip": "fixed"}, "clip = 'fixed' needs finite clip_logvar_min <= clip_logvar_max"),
        ({"learnable_weights": "yes"}, "learnable_weights = 'yes' is not a boolean"),
        ({"betaa_kl": 1.0}, "unknown config key(s) ['betaa_kl']"),
    ],
)
def test_bad_config_is_rejected_naming_key_and_value(overrides, message):
    with pytest.raises(ConfigError) as error:
        smoke(**overrides)
    assert message in str(error.value)


def test_unknown_dataset_is_rejected():
    with pytest.raises(ConfigError, match="unknown dataset 'moons'"):
        resolve_config("moons")


def test_infinite_loss_raises_training_diverged_with_step_and_loss():
    with pytest.raises(TrainingDiverged) as error:
        train(smoke(beta_rec=1e300))
    assert error.value.iteration == 0 and error.value.loss_name == "loss_encoder"
    assert "diverged at iteration 0: loss_encoder" in str(error.value)


def test_loss_monitor_names_the_first_bad_step_and_loss():
    monitor = LossMonitor(torch.device("cpu"))
    one = torch.tensor(1.0)
    for step in range(10):
        bad = torch.tensor(float("nan")) if step >= 7 else one
        monitor.add(step, {"loss_encoder": one, "loss_decoder": one, "kl_fake": bad})
    with pytest.raises(TrainingDiverged) as error:
        monitor.flush()
    assert (error.value.iteration, error.value.loss_name) == (7, "kl_fake")


def test_cli_rejects_bad_value_with_exit_code_2():
    result = subprocess.run(
        [sys.executable, "-m", "core", "--budget", "smoke", "--clip", "hard"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown clip 'hard' (expected: none, adaptive, fixed)" in result.stderr


def test_cli_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "--budget",
            "smoke",
            "--out",
            str(out),
            "--set",
            "responsibility_weight=1",
            "--learnable-weights",
            "false",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["responsibility_weight"] == 1 and config["learnable_weights"] is False
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "samples.npy", "figure.png", "checkpoint.pt"}


def test_short_training_on_8gaussians_learns_all_eight_modes(tmp_path):
    from core.game import Game
    from core.task import make_task

    config = resolve_config(
        "8gaussians",
        "quick",
        prior="vamp_to_mog",
        iterations=1200,
        warmup=400,
        batch_size=256,
        mc_samples=10,
        eval_every=1200,
        lr_milestones=[800],
    )
    torch.manual_seed(config.seed)
    task = make_task(config, torch.device("cpu"))
    untrained_kl = task.evaluate(Game(config, task, torch.device("cpu")), final=False)["kl"]
    final = train(config, out_dir=tmp_path)
    assert final["kl"] < 0.5 * untrained_kl
    points = np.load(tmp_path / "samples.npy")
    centres = 2 * np.array([[np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)] for k in range(8)]) / 1.414
    distances = np.linalg.norm(points[:, None] - centres[None], axis=2)
    near = distances.min(1) < 0.25
    assert near.mean() > 0.5
    share_per_mode = np.bincount(distances.argmin(1)[near], minlength=8) / len(points)
    assert (share_per_mode > 0.03).all(), share_per_mode
