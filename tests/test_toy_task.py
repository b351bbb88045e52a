"""ToyTask's evaluation and VampPrior start: gnelbo's real points, its agreement across budgets, the pseudo-inputs."""

import dataclasses
import math

import pytest
import torch

import core.toy_task
from core.config import resolve_config
from core.data.toy2d import sample_toy2d
from core.game import Game
from core.toy_task import ToyTask
from core.train import train

CPU = torch.device("cpu")


def test_gnelbo_real_points_are_separately_drawn_batches_of_128(monkeypatch):
    """The rings sampler puts a batch's points at n//4 evenly spaced angles a ring: 100 batches of 128 give 32 fixed
    angles on the outer ring (one batch of 12,800 would give 3,200, i.e. angles spread evenly)."""
    config = resolve_config("rings", "smoke", prior="standard", gnelbo_batches=100)
    task = ToyTask(config, CPU)
    seen = {}

    def capture(neg_elbo, real_points, *args, **kwargs):
        seen["real"] = real_points
        return 0.0

    monkeypatch.setattr(core.toy_task, "gnelbo", capture)
    task.evaluate(Game(config, task, CPU), final=True)
    real = seen["real"]
    assert real.shape == (100 * 128, 2)
    outer = real[(real.norm(dim=1) - 3.0).abs() < 0.25]
    spacing = 2 * math.pi / 32
    angle = torch.atan2(outer[:, 1], outer[:, 0])
    off_lattice = torch.remainder(angle + spacing / 2, spacing) - spacing / 2  # distance to the nearest of the 32
    # noise 0.08 at radius 3 is 0.027 rad: ~86 % fall within 0.04 rad of a lattice angle; uniform angles give ~41 %
    assert (off_lattice.abs() < 0.04).float().mean() > 0.7
    # and they are the task's sampler called once per batch with the evaluation generator
    drawn = task.gnelbo_real_points(torch.Generator().manual_seed(7))
    mine = torch.Generator().manual_seed(7)
    torch.testing.assert_close(drawn, torch.cat([sample_toy2d("rings", 128, mine) for _ in range(100)]), rtol=0, atol=0)


def test_vamp_pseudo_inputs_start_on_both_spiral_arms():
    """2spirals returns one arm, then the other (arm 2 = −arm 1): the K = 64 pseudo-inputs are K points of a shuffled
    batch of 512, so they sit on both arms, not all on the first."""
    config = resolve_config("2spirals", "smoke", prior="vamp", num_components=64, seed=3)
    task = ToyTask(config, CPU)
    batch = sample_toy2d("2spirals", 512, torch.Generator().manual_seed(3))
    pseudo = task.init_data(64)
    assert pseudo.shape == (64, 2)
    rows = torch.cdist(pseudo, batch).argmin(dim=1)
    torch.testing.assert_close(pseudo, batch[rows], rtol=0, atol=0)  # points of that batch,
    assert len(set(rows.tolist())) == 64  # distinct,
    assert (rows < 256).any() and (rows >= 256).any()  # from both arms


def _gnelbo(config, game, seed: int, grid: int, batches: int, mc_samples: int) -> float:
    """The final gnelbo of `game`, evaluated as a run with this seed, grid, number of real batches and M would."""
    c = dataclasses.replace(config, seed=seed, gnelbo_grid=grid, gnelbo_batches=batches, mc_samples=mc_samples)
    return ToyTask(c, CPU).evaluate(game, final=True)["gnelbo"]


def test_quick_and_paper_gnelbo_agree_on_a_trained_model():
    """The shorter budgets' coarse gnelbo (grid 256, 20 batches of 128; here at demo's M = 20, the coarsest)
    estimates the paper's (grid 1024, 100 batches, M = 100) of the same model. Measured on this model (8gaussians
    VAE, 300 iterations, 1 thread): the coarse evaluation at eval seeds 0–7 gave ×1e7 7.064–7.116, mean 7.086,
    relative std 0.22 %; the paper's evaluation at seeds 0 and 1 gave 7.083 and 7.066. Tolerance: 1 % per coarse
    value (~3.5 std of coarse − paper). Before the rescale the coarse evaluation read 109.9.
    (The paper's 1024² grid, 1M points through both MLPs, takes about a minute on one loaded core.)"""
    config = resolve_config("8gaussians", "smoke", model="vae", prior="standard", iterations=300, eval_every=300)
    states = []
    train(config, on_checkpoint=states.append)
    game = Game(config, ToyTask(config, CPU), CPU)
    game.load_state_dict(states[-1]["game"])
    paper = _gnelbo(config, game, 0, 1024, 100, 100)
    assert 1 < paper * 1e7 < 10  # the paper's tables print it ×1e7
    for seed in range(2):
        assert _gnelbo(config, game, seed, 256, 20, 20) == pytest.approx(paper, rel=0.01)


def test_bf16_2d_nets_return_float32_near_the_fp32_nets():
    """The opt-in bf16 path: same parameters, bf16 products inside, float32 out, within bf16's precision."""
    from core.nets import MLPDecoder, MLPEncoder

    torch.manual_seed(0)
    encoder, decoder = MLPEncoder(2, 2), MLPDecoder(2, 2)
    encoder_bf16, decoder_bf16 = MLPEncoder(2, 2, autocast="bf16"), MLPDecoder(2, 2, autocast="bf16")
    encoder_bf16.load_state_dict(encoder.state_dict())
    decoder_bf16.load_state_dict(decoder.state_dict())
    x = sample_toy2d("8gaussians", 256, generator=torch.Generator().manual_seed(0))
    for fast, plain in ((encoder_bf16(x), encoder(x)), ((decoder_bf16(x),), (decoder(x),))):
        for got, want in zip(fast, plain):
            assert got.dtype == torch.float32
            assert not torch.equal(got, want)  # the products did run in bf16
            torch.testing.assert_close(got, want, rtol=0.05, atol=0.02)


def test_bf16_2d_game_steps_train_in_float32_terms(monkeypatch):
    """A few game steps with autocast=bf16: the KLs and losses are float32 and finite, and the parameters move."""
    import core.nets

    monkeypatch.setattr(core.nets, "has_native_bf16", lambda device: True)  # no warning: this is not a speed test
    config = resolve_config("8gaussians", "smoke", prior="vamp_to_mog", autocast="bf16", batch_size=64, mc_samples=4)
    task = ToyTask(config, CPU)
    game = Game(config, task, CPU)
    game.switch_to_mog()
    game.start_game()
    before = [p.detach().clone() for p in game.decoder.parameters()]
    for _ in range(3):
        logs = game.game_step(next(task.batches(0)))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in logs.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, game.decoder.parameters()))


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_hardware_without_native_bf16_warns(monkeypatch, native):
    import warnings

    import core.nets

    monkeypatch.setattr(core.nets, "has_native_bf16", lambda device: native)
    config = resolve_config("8gaussians", "smoke", prior="standard", autocast="bf16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ToyTask(config, CPU).make_nets(config)
    messages = [str(w.message) for w in caught if "bf16" in str(w.message)]
    assert len(messages) == (0 if native else 1)
    assert native or "emulated" in messages[0]
