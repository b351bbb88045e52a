"""The fast game step against the literal one (core/reference_step.py): same losses, same gradients, same training.

Both draw their randomness with the same `draw_*_noise` in the same order, so reseeding before each step gives both
the same noise; the players start from the same parameters, in float64, and the comparison is tight.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

import core.mixture
import core.train
from core.config import resolve_config
from core.game import Game, has_batch_norm
from core.reference_step import ReferenceGame
from core.task import make_task
from core.train import train

PLAYERS = ("encoder", "decoder", "prior")
TOLERANCE = {"rtol": 1e-9, "atol": 1e-12}


@pytest.fixture(autouse=True)
def float64_and_small_blocks(monkeypatch):
    """float64 everywhere; the mixture's CPU blocks small enough that every KL runs over several of them. One thread:
    these steps are small, and a second thread only waits on a busy machine."""
    torch.set_num_threads(1)
    monkeypatch.setattr(core.mixture, "CPU_BLOCK_ELEMENTS", 300 * 64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_pair(**overrides) -> tuple[Game, ReferenceGame, torch.Tensor]:
    config = resolve_config("8gaussians", "smoke", **overrides)
    games = []
    for cls in (Game, ReferenceGame):
        torch.manual_seed(0)
        task = make_task(config, torch.device("cpu"))
        games.append(cls(config, task, torch.device("cpu")))
    fast, reference = games
    reference.load_state_dict(fast.state_dict())
    return fast, reference, next(task.batches(0)).to(torch.get_default_dtype())


def enter_game(*games: Game) -> None:
    for game in games:
        if game.config.converts_to_mog:
            game.switch_to_mog()
        game.start_game()


def assert_same(fast_logs: dict, reference_logs: dict, fast: Game, reference: Game, players) -> None:
    """Same reported losses; the same gradient (left in .grad by the step) and parameters for each stepped player."""
    assert fast_logs.keys() == reference_logs.keys()
    for name in fast_logs:
        torch.testing.assert_close(fast_logs[name], reference_logs[name], **TOLERANCE, msg=name)
    for player in players:
        pairs = zip(getattr(fast, player).named_parameters(), getattr(reference, player).parameters())
        for (name, a), b in pairs:
            assert (a.grad is None) == (b.grad is None), f"{player}.{name}"
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, **TOLERANCE, msg=f"grad {player}.{name}")
            torch.testing.assert_close(a, b, **TOLERANCE, msg=f"{player}.{name}")


def same_seed(seed: int, step, *args):
    torch.manual_seed(seed)
    return step(*args)


PRIORS = ["standard", "mog", "vamp", "vamp_to_mog"]


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("responsibility_weight", [0.0, 10.0])
def test_warmup_step_matches_reference(prior, responsibility_weight):
    fast, reference, x = make_pair(prior=prior, responsibility_weight=responsibility_weight)
    for seed in range(3):
        logs = [same_seed(seed, game.warmup_step, x) for game in (fast, reference)]
        assert_same(*logs, fast, reference, PLAYERS)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("clip", ["none", "adaptive"])
@pytest.mark.parametrize("responsibility_weight", [0.0, 10.0])
@pytest.mark.parametrize("prior_with_encoder", [False, True])
def test_game_step_matches_reference(prior, clip, responsibility_weight, prior_with_encoder):
    """Encoder step, then decoder step, two iterations (Adam's moments included), every prior and switch."""
    fast, reference, x = make_pair(
        prior=prior, clip=clip, responsibility_weight=responsibility_weight, prior_with_encoder=prior_with_encoder
    )
    enter_game(fast, reference)
    encoder_players = ("encoder", "prior") if prior_with_encoder else ("encoder",)
    for seed in range(2):
        (fast_logs, fast_latents), (reference_logs, reference_latents) = (
            same_seed(2 * seed, game.encoder_step, x) for game in (fast, reference)
        )
        assert_same(fast_logs, reference_logs, fast, reference, encoder_players)
        for a, b in zip(fast_latents, reference_latents):
            torch.testing.assert_close(a, b, **TOLERANCE)
        logs = [
            same_seed(2 * seed + 1, game.decoder_step, x, *latents)
            for game, latents in ((fast, fast_latents), (reference, reference_latents))
        ]
        assert_same(*logs, fast, reference, PLAYERS)


@pytest.mark.parametrize(
    "overrides",
    [
        {"prior": "vamp_to_mog", "prior_in_game": False},
        {"prior": "vamp_to_mog", "learnable_weights": False},
        {"prior": "mog", "gamma_r": 0.0},
        {"prior": "mog", "clip": "fixed", "clip_logvar_min": -1.0, "clip_logvar_max": 0.5},
        {"prior": "standard", "kl_estimator": "analytic"},
        {"prior": "vamp_to_mog", "protocol": "paper"},
    ],
    ids=["no-IP", "fixed-weights", "gamma_r-0", "fixed-clip", "analytic-kl", "paper-protocol"],
)
def test_game_step_matches_reference_for_the_other_switches(overrides):
    fast, reference, x = make_pair(**overrides)
    enter_game(fast, reference)
    for seed in range(2):
        logs = [same_seed(seed, game.game_step, x) for game in (fast, reference)]
        assert_same(*logs, fast, reference, PLAYERS)


def test_unbatched_passes_match_reference():
    """The path for nets with BatchNorm (one pass a batch), forced on the 2D nets."""
    fast, reference, x = make_pair(prior="vamp_to_mog", responsibility_weight=1.0)
    fast.batch_passes = False
    enter_game(fast, reference)
    for seed in range(2):
        logs = [same_seed(seed, game.game_step, x) for game in (fast, reference)]
        assert_same(*logs, fast, reference, PLAYERS)


def test_decoder_step_recomputes_the_reconstruction_when_it_cannot_share_it():
    """A decoder step on latents other than the last encoder step's (or after D changed) decodes them afresh."""
    fast, reference, x = make_pair(prior="mog")
    enter_game(fast, reference)
    _, latents = same_seed(0, fast.encoder_step, x)
    same_seed(0, reference.encoder_step, x)
    other = tuple(t.clone() for t in latents)
    logs = [same_seed(1, game.decoder_step, x, *other) for game in (fast, reference)]
    assert_same(*logs, fast, reference, PLAYERS)


def test_batch_norm_nets_are_not_batched():
    assert has_batch_norm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert not has_batch_norm(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def short_training(seed: int) -> dict:
    """Warm-up at a high learning rate (the VAE learns 8gaussians in ~100 iterations), lowered before the VampPrior
    becomes a MoG (fresh Adam moments at a high rate would wreck it), then a short game."""
    config = resolve_config(
        "8gaussians",
        "smoke",
        seed=seed,
        iterations=160,
        warmup=110,
        mog_warmup=20,
        eval_every=160,
        eval_samples=5000,
        lr=2e-3,
        prior_lr=2e-3,
        lr_milestones=[85],
        beta_rec=1.0,
        beta_kl=0.05,
        beta_neg=0.1,
    )
    return train(config)


@pytest.mark.filterwarnings("ignore")
def test_short_training_ends_with_the_same_kl_as_the_reference(monkeypatch):
    """Several seeds of a short 8gaussians run (float32, as in a study) with each step: the mean kl and final losses
    of the fast step are within noise of the reference's (the runs start identical and drift apart through rounding,
    which the game amplifies)."""
    torch.set_default_dtype(torch.float32)
    seeds = range(4)
    fast = [short_training(seed) for seed in seeds]
    monkeypatch.setattr(core.train, "Game", ReferenceGame)
    reference = [short_training(seed) for seed in seeds]
    for name in ("kl", "loss_encoder", "loss_decoder"):
        a, b = np.array([r[name] for r in fast]), np.array([r[name] for r in reference])
        assert np.isfinite(a).all() and np.isfinite(b).all(), name
        noise = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / len(seeds))
        assert abs(a.mean() - b.mean()) <= 3 * noise + 1e-3 * abs(b.mean()), (name, a, b)
