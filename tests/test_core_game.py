"""Each player's update moves only that player (shared/DESIGN.md §1)."""

import pytest
import torch

from core.config import resolve_config
from core.game import Game
from core.tasks import make_task


def make_game(**overrides) -> tuple[Game, torch.Tensor]:
    config = resolve_config("8gaussians", "smoke", **overrides)
    torch.manual_seed(0)
    task = make_task(config, torch.device("cpu"))
    game = Game(config, task, torch.device("cpu"))
    if config.converts_to_mog:
        game.switch_to_mog()
    game.start_game()
    return game, next(task.batches(0))


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("prior", ["mog", "vamp_to_mog", "vamp"])
def test_encoder_step_moves_only_the_encoder(prior):
    game, x = make_game(prior=prior, responsibility_weight=10.0)
    enc, dec, pri = snapshot(game.encoder), snapshot(game.decoder), snapshot(game.prior)
    game.encoder_step(x)
    assert changed(enc, game.encoder)
    assert not changed(dec, game.decoder)
    assert not changed(pri, game.prior)


@pytest.mark.parametrize("prior", ["mog", "vamp_to_mog"])
def test_decoder_step_moves_decoder_and_prior_but_not_the_encoder(prior):
    game, x = make_game(prior=prior)
    _, (z, mu, logvar) = game.encoder_step(x)
    enc, dec, pri = snapshot(game.encoder), snapshot(game.decoder), snapshot(game.prior)
    game.decoder_step(x, z, mu, logvar)
    assert not changed(enc, game.encoder)
    assert changed(dec, game.decoder)
    assert changed(pri, game.prior)


def test_prior_stays_put_in_the_game_without_prior_in_game():
    game, x = make_game(prior="vamp_to_mog", prior_in_game=False)
    pri = snapshot(game.prior)
    for _ in range(3):
        game.game_step(x)
    assert not changed(pri, game.prior)


def test_prior_with_encoder_steps_with_the_encoder_not_the_decoder():
    game, x = make_game(prior="mog", prior_with_encoder=True)
    pri = snapshot(game.prior)
    _, (z, mu, logvar) = game.encoder_step(x)
    assert changed(pri, game.prior)
    pri = snapshot(game.prior)
    game.decoder_step(x, z, mu, logvar)
    assert not changed(pri, game.prior)


def test_fixed_weights_never_learn_and_learnable_weights_learn_in_warmup():
    fixed, x = make_game(prior="mog", learnable_weights=False)
    assert "weight_logits" not in dict(fixed.prior.named_parameters())
    game, x = make_game(prior="mog", learnable_weights=True)
    game.in_game = False
    before = game.prior.weight_logits.detach().clone()
    game.warmup_step(x)
    assert not torch.equal(before, game.prior.weight_logits)


def test_warmup_step_moves_all_three_players():
    game, x = make_game(prior="vamp")
    enc, dec, pri = snapshot(game.encoder), snapshot(game.decoder), snapshot(game.prior)
    game.warmup_step(x)
    assert changed(enc, game.encoder) and changed(dec, game.decoder) and changed(pri, game.prior)


def test_adaptive_clip_bounds_are_the_modes_logvar_range_at_game_start():
    game, _ = make_game(prior="mog", clip="adaptive")
    logvar = game.prior.logvar.detach()
    torch.testing.assert_close(game.prior.clip.lo, logvar.min(0).values)
    torch.testing.assert_close(game.prior.clip.hi, logvar.max(0).values)
    unclipped, _ = make_game(prior="mog", clip="none")
    assert not unclipped.prior.clip.active


def test_learning_rate_follows_multistep_milestones():
    game, _ = make_game(prior="mog", lr=1e-3, prior_lr=5e-4, lr_milestones=[10, 20])
    rates = []
    for unit in (0, 9, 10, 19, 20, 25):
        game.set_learning_rates(unit)
        rates.append((game.optimizers["encoder"].param_groups[0]["lr"], game.optimizers["prior"].param_groups[0]["lr"]))
    expected = [(1e-3, 5e-4), (1e-3, 5e-4), (1e-4, 5e-5), (1e-4, 5e-5), (1e-5, 5e-6), (1e-5, 5e-6)]
    for got, want in zip(rates, expected):
        assert got == pytest.approx(want)
