"""The image path end to end on scikit-learn's digits: training through core.train, metrics, artifacts, resume, CLI."""

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import core.image_task
from core.config import resolve_config
from core.data.images import load_images
from core.game import Game
from core.image_task import ImageTask
from core.metrics.images import InceptionFeatures
from core.train import train

CPU = torch.device("cpu")
PNG = b"\x89PNG\r\n\x1a\n"
IMAGE_METRICS = ("precision", "recall", "svm_few", "svm_many", "knn_few", "knn_many", "assignment_entropy")


def smoke(**overrides):
    return resolve_config("digits", "smoke", **overrides)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One smoke run: epoch 1 a β-VAE warm-up with the VampPrior, epoch 2 the game with the prior made a MoG."""
    out = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    config = smoke()
    task = ImageTask(config, CPU)
    untrained = task.evaluate(Game(config, task, CPU), final=False)
    reports, states = [], {}
    final = train(
        config,
        on_report=reports.append,
        on_checkpoint=lambda s: states.__setitem__(s["unit"], s),
        checkpoint_every=1,
        out_dir=out,
    )
    return {"out": out, "untrained": untrained, "reports": reports, "states": states, "final": final}


def test_digits_training_learns_and_reports_every_image_metric(digits_run):
    reports, final = digits_run["reports"], digits_run["final"]
    assert [r["epoch"] for r in reports] == [1, 2] and not reports[0]["in_game"] and reports[1]["in_game"]
    assert reports[1]["rec"] < reports[0]["rec"]
    assert final["rec_test"] < 0.8 * digits_run["untrained"]["rec_test"]
    for key in (
        "loss_encoder",
        "loss_decoder",
        "rec",
        "kl_real",
        "kl_fake",
        "rec_test",
        "active_modes",
        "fd_classifier_gen",
        "fd_classifier_rec",
        "classifier_test_accuracy",
        *IMAGE_METRICS,
    ):
        assert key in final and math.isfinite(final[key]), key
    assert "fid_gen" not in final and "fid_rec" not in final  # no Inception weights: never called FID
    assert 0 <= final["precision"] <= 1 and 0 <= final["recall"] <= 1 and 0 <= final["assignment_entropy"] <= 1
    assert final["active_modes"] == 100


def test_digits_run_writes_grids_figure_and_metrics(digits_run):
    out = digits_run["out"]
    for name in ("samples.png", "reconstructions.png", "figure.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["dataset"] == "digits" and saved["svm_few"] == pytest.approx(digits_run["final"]["svm_few"])
    assert (out / "checkpoint.pt").stat().st_size > 0


def _assert_same_parameters(state_a, state_b):
    for player in ("encoder", "decoder", "prior"):
        for name, value in state_a["game"][player].items():
            assert torch.equal(value, state_b["game"][player][name]), f"{player}.{name}"


def test_resume_after_the_first_epoch_is_exact(digits_run):
    resumed = {}
    train(
        smoke(),
        resume=digits_run["states"][1],
        on_checkpoint=lambda s: resumed.__setitem__(s["unit"], s),
        checkpoint_every=1,
    )
    _assert_same_parameters(digits_run["states"][2], resumed[2])


def test_resume_after_the_switch_to_a_mog_keeps_batchnorm_statistics():
    """Resuming a MoG checkpoint must not rerun E(u) over the loaded encoder (it would move BatchNorm stats)."""
    config = smoke(mog_warmup=1)  # the switch happens at unit 0, so the unit-1 checkpoint holds a MoG
    states, resumed = {}, {}
    train(config, on_checkpoint=lambda s: states.__setitem__(s["unit"], s), checkpoint_every=1)
    train(config, resume=states[1], on_checkpoint=lambda s: resumed.__setitem__(s["unit"], s), checkpoint_every=1)
    _assert_same_parameters(states[2], resumed[2])


def test_evaluation_leaves_training_untouched():
    """The final evaluation (classifier, probes with a BatchNorm refresh, sampling) changes no state of training."""
    config = smoke(fid_samples=20)
    torch.manual_seed(0)
    task = ImageTask(config, CPU)
    game = Game(config, task, CPU)
    before = copy.deepcopy({"game": game.state_dict(), "rng": torch.get_rng_state(), "task": task.rng_state()})
    task.evaluate(game, final=True)
    assert torch.equal(torch.get_rng_state(), before["rng"]) and torch.equal(task.rng_state(), before["task"])
    assert game.encoder.training and game.decoder.training
    _assert_same_parameters(before, {"game": game.state_dict()})


def test_task_shape_scale_nets_and_pseudo_inputs():
    config = smoke(autocast="bf16")
    task = ImageTask(config, CPU)
    assert task.image_shape == (1, 8, 8) and task.scale == 1 / 64
    assert config.fresh_regularizer_samples is False and config.squash_pseudo_inputs is True  # image defaults
    encoder, decoder = task.make_nets(config)
    assert encoder.autocast == decoder.autocast == "bf16"
    conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # The VampPrior starts at the first K images of the shuffled train set, drawn from the task's generator.
    images, _ = load_images("digits", train=True)
    expected = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))[:10]]
    torch.testing.assert_close(task.init_data(10), expected)
    with pytest.raises(ValueError, match="2000 pseudo-inputs"):
        task.init_data(2000)


def test_bf16_steps_keep_losses_in_float32():
    config = smoke(autocast="bf16")
    torch.manual_seed(0)
    task = ImageTask(config, CPU)
    game = Game(config, task, CPU)
    x = next(task.batches(0))
    warmup = game.warmup_step(x)
    game.switch_to_mog()
    game.start_game()
    logs = game.game_step(x)
    for name, value in {**warmup, **logs}.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name


def test_inception_weights_give_fid_names(tmp_path, monkeypatch):
    """With a weights file the Fréchet distance is on Inception features and named fid_*, never fd_classifier."""
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 6))  # stands in for Inception
    monkeypatch.setattr(core.image_task, "load_inception", lambda path: pool)
    config = smoke(inception_weights=str(weights), fid_samples=20, probe_samples=None)
    torch.manual_seed(0)
    task = ImageTask(config, CPU)
    extractor, extra = task._feature_extractor()
    assert isinstance(extractor, InceptionFeatures) and extra == {}
    metrics = task.evaluate(Game(config, task, CPU), final=True)
    assert math.isfinite(metrics["fid_gen"]) and math.isfinite(metrics["fid_rec"])
    assert not any(name.startswith("fd_classifier") or name.startswith("classifier") for name in metrics)


def test_missing_inception_weights_fail_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth"):
        ImageTask(smoke(inception_weights=str(tmp_path / "missing.pth")), CPU)


def test_cli_trains_digits_and_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    command = ["-m", "core", "--dataset", "digits", "--budget", "smoke", "--out", str(out), "--threads", "2"]
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(saved["fd_classifier_gen"]) and saved["config"]["epochs"] == 2
    assert {p.name for p in out.iterdir()} >= {
        "metrics.json",
        "samples.png",
        "reconstructions.png",
        "figure.png",
        "checkpoint.pt",
    }


def test_cli_names_the_missing_data_folder(tmp_path):
    missing = tmp_path / "no-data"
    result = subprocess.run(
        [sys.executable, "-m", "core", "--dataset", "fmnist", "--budget", "smoke", "--data-dir", str(missing)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert str(missing / "FashionMNIST" / "raw") in result.stderr and "--download" in result.stderr
    assert "Traceback" not in result.stderr
