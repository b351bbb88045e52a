"""Metrics at chosen epochs (`metric_epochs`) and the two protocols: `clean` scores the final model in eval mode;
`paper` reports the checkpoint with the lowest FID (here: fd_classifier, no Inception weights) with its metrics."""

import math

import pytest
import torch

import core.image_task
from core.config import PAPER_METRIC_EPOCHS, ConfigError, TrainConfig, resolve_config
from core.game import Game
from core.image_task import ImageTask
from core.protocol import select_checkpoint
from core.train import train

CPU = torch.device("cpu")
FULL = (
    "fd_classifier_gen",
    "fd_classifier_rec",
    "precision",
    "recall",
    "svm_few",
    "svm_many",
    "knn_few",
    "knn_many",
    "assignment_entropy",
    "classifier_test_accuracy",
)


def smoke(**overrides):
    return resolve_config("digits", "smoke", **overrides)


def test_select_checkpoint_takes_the_lowest_fid_and_that_checkpoints_metrics():
    scores = {
        0: {"fid_gen": 90.0, "fd_classifier_gen": 1.0, "recall": 0.1},
        80: {"fid_gen": 30.0, "fd_classifier_gen": 5.0, "recall": 0.4},
        120: {"fid_gen": 30.0, "fd_classifier_gen": 4.0, "recall": 0.5},
        160: {"fid_gen": math.nan, "fd_classifier_gen": 0.5, "recall": 0.9},
    }
    # FID decides when present (not fd_classifier); the earliest of a tie; NaN never wins
    assert select_checkpoint(scores) == {**scores[80], "selected_epoch": 80}
    without_fid = {e: {k: v for k, v in m.items() if k != "fid_gen"} for e, m in scores.items()}
    assert select_checkpoint(without_fid) == {**without_fid[160], "selected_epoch": 160}
    with pytest.raises(ValueError, match="metric_epochs is empty"):
        select_checkpoint({})
    with pytest.raises(ValueError, match="none of fid_gen, fd_classifier_gen"):
        select_checkpoint({1: {"recall": 0.5}})


def test_metric_epochs_defaults_per_budget_and_bad_values_are_named():
    assert resolve_config("mnist", "paper").metric_epochs == PAPER_METRIC_EPOCHS == (0, 80, 120, 160, 200, 219)
    assert resolve_config("cifar10", "quick").metric_epochs == (5, 9)
    assert smoke().metric_epochs == () and resolve_config("8gaussians", "paper").metric_epochs == ()
    assert smoke(metric_epochs=[0, 2]).to_dict()["metric_epochs"] == [0, 2]
    for overrides, message in [
        (
            {"metric_epochs": [1, 3]},
            r"metric_epochs = \[1, 3\]: 3 is not an epoch of this run \(expected integers "
            r"from 0 to epochs = 2\)",
        ),
        ({"metric_epochs": [1, 1]}, r"metric_epochs = \[1, 1\] repeats an epoch"),
        ({"metric_epochs": [0.5]}, r"0\.5 is not an epoch"),
        ({"metric_epochs": 1}, r"metric_epochs = 1 is not a list of epochs"),
        (
            {"protocol": "paper"},
            r"protocol 'paper' reports the lowest FID over the checkpoints at metric_epochs, "
            r"but metric_epochs is empty",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            smoke(**overrides)
    with pytest.raises(ConfigError, match=r"applies to image datasets only \('rings' is 2D"):
        resolve_config("rings", "smoke", metric_epochs=[10])


def test_clean_protocol_computes_every_metric_at_the_metric_epochs_and_at_the_end():
    """eval_every 2 with metric_epochs [1]: epoch 1 is reported (every metric) and checkpointed although it is off
    the evaluation grid; the final report scores the final model."""
    reports, states = [], {}
    final = train(
        smoke(eval_every=2, metric_epochs=[1]),
        on_report=reports.append,
        on_checkpoint=lambda s: states.__setitem__(s["unit"], s),
    )
    assert [r["epoch"] for r in reports] == [1, 2] and sorted(states) == [1, 2]
    for report in reports:
        assert all(math.isfinite(report[k]) for k in FULL)
    assert "selected_epoch" not in final and final is reports[-1]
    assert final["fd_classifier_gen"] != reports[0]["fd_classifier_gen"]  # the final model, not the checkpoint
    assert set(states[1]["scores"]) == {1} and states[1]["scores"][1]["svm_few"] == reports[0]["svm_few"]


@pytest.fixture(scope="module")
def paper_run():
    """Protocol paper on digits: the untrained model (epoch 0) and the one after epoch 1 are scored; the model
    after the last epoch (2) is not, as in the paper."""
    config = smoke(protocol="paper", metric_epochs=[0, 1])
    reports, states = [], {}
    final = train(config, on_report=reports.append, on_checkpoint=lambda s: states.__setitem__(s["unit"], s))
    return {"config": config, "reports": reports, "states": states, "final": final}


def test_paper_protocol_reports_the_checkpoint_with_the_lowest_fd_and_its_other_metrics(paper_run):
    reports, final = paper_run["reports"], paper_run["final"]
    assert [r["epoch"] for r in reports] == [0, 1, 2] and sorted(paper_run["states"]) == [0, 1, 2]
    scored = {r["epoch"]: r for r in reports[:2]}
    assert all(math.isfinite(scored[e][k]) for e in scored for k in FULL)
    best = min(scored, key=lambda e: scored[e]["fd_classifier_gen"])
    assert scored[0]["fd_classifier_gen"] != scored[1]["fd_classifier_gen"]
    assert final["selected_epoch"] == best and final["epoch"] == 2 and final["done"]
    for key in (*FULL, "rec_test", "active_modes"):
        assert final[key] == scored[best][key], key
    assert "fid_gen" not in final  # no Inception weights: never called FID


def test_paper_protocol_resumes_with_its_scored_checkpoints(paper_run):
    resumed = train(paper_run["config"], resume=paper_run["states"][1])
    for key in (*FULL, "selected_epoch"):
        assert resumed[key] == paper_run["final"][key], key


def test_paper_protocol_scores_in_train_mode_and_leaves_batchnorm_as_it_was(tmp_path, monkeypatch):
    """The same untrained model scores differently with BatchNorm on batch statistics (paper) than on its running
    statistics (clean); afterwards every buffer and the nets' mode are what they were. Inception would run in train
    mode too."""
    clean = smoke(fid_samples=200)
    paper = smoke(fid_samples=200, protocol="paper", metric_epochs=[0])
    torch.manual_seed(0)
    clean_task = ImageTask(clean, CPU)
    game = Game(clean, clean_task, CPU)
    buffers = [b.clone() for net in (game.encoder, game.decoder) for b in net.buffers()]
    paper_scores = ImageTask(paper, CPU).evaluate(game, final=True)
    after = [b for net in (game.encoder, game.decoder) for b in net.buffers()]
    assert all(torch.equal(a, b) for a, b in zip(buffers, after, strict=True))
    assert game.encoder.training and game.decoder.training
    clean_scores = clean_task.evaluate(game, final=True)
    assert paper_scores["fd_classifier_gen"] != clean_scores["fd_classifier_gen"]
    assert paper_scores["svm_few"] == clean_scores["svm_few"]  # the probes are not part of the quirk

    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    monkeypatch.setattr(core.image_task, "load_inception", lambda path: torch.nn.Identity())
    for config, train_mode in ((clean, False), (paper, True)):
        task = ImageTask(TrainConfig.from_dict({**config.to_dict(), "inception_weights": str(weights)}), CPU)
        assert task._feature_extractor()[0].train_mode is train_mode


class _InceptionSpy(torch.nn.Module):
    """Stands in for Inception pool3: records the size of every batch it sees; 4 features (a 1×1 conv, pooled)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.conv(x).mean(dim=(2, 3))


def _chunks(n, size):
    return [size] * (n // size) + ([n % size] if n % size else [])


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_generation_metrics_batch_by_protocol(protocol, tmp_path, monkeypatch):
    """paper: BatchNorm in train mode makes every feature depend on its batch, so the VAE generates and
    reconstructs, and Inception sees real, generated and reconstructed images, in batches of the training batch
    size (64 for digits), as the paper's code. clean (eval mode): the large chunks, where size changes nothing."""
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    spy = _InceptionSpy()
    monkeypatch.setattr(core.image_task, "load_inception", lambda path: spy)
    n = 640  # 10 training batches; the clean chunks split it differently (500 + 140, Inception 200s)
    extra = {"protocol": "paper", "metric_epochs": [0]} if protocol == "paper" else {}
    config = smoke(fid_samples=n, prior="mog", num_components=10, inception_weights=str(weights), **extra)
    torch.manual_seed(0)
    task = ImageTask(config, CPU)
    monkeypatch.setattr(task, "_latent_metrics", lambda game: {})  # the probes have their own passes
    game = Game(config, task, CPU)
    calls = {"encoder": [], "decoder": []}
    for name in calls:
        getattr(game, name).register_forward_hook(
            lambda net, inputs, output, name=name: calls[name].append((net.training, inputs[0].shape[0]))
        )
    with task._evaluating(game):
        metrics = task.image_metrics(game)
    assert math.isfinite(metrics["fid_gen"]) and math.isfinite(metrics["fid_rec"])

    if protocol == "paper":
        assert config.batch_size == 64
        assert calls["encoder"] == [(True, 64)] * 10  # reconstructions
        assert calls["decoder"] == [(True, 64)] * 20  # generations, then reconstructions
        assert spy.batch_sizes == [64] * 30  # real, generated, reconstructed
    else:
        vae = _chunks(n, core.image_task.EVAL_CHUNK)
        assert vae == [500, 140]
        assert calls["encoder"] == [(False, b) for b in vae]
        assert calls["decoder"] == [(False, b) for b in vae + vae]
        per_chunk = [s for b in vae for s in _chunks(b, core.image_task.INCEPTION_BATCH)]
        assert spy.batch_sizes == _chunks(n, core.image_task.INCEPTION_BATCH) + per_chunk + per_chunk
