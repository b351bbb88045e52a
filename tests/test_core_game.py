"""Each player's update moves only that player (docs/method.md §1)."""

import pytest
import torch

from core.config import resolve_config
from core.game import Game
from core.losses import kl_and_mean_responsibility, kl_standard_normal, reconstruction_error
from core.task import make_task


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


def literal_encoder_loss(game: Game, x: torch.Tensor, noise) -> torch.Tensor:
    """lossE written out as the official implementations compute it: the encoder's inputs x_f and x̂ are detached,
    the reconstruction targets are not (x̂ = D(z(φ)); with prior_with_encoder, x_f = D(z_p(ψ)))."""
    c, scale, b = game.config, game.task.scale, x.shape[0]
    prior = game.prior.mixture(with_grad=c.prior_with_encoder)

    def kl(mu, logvar, target, eps):
        if c.kl_estimator == "analytic":
            return kl_standard_normal(mu, logvar)
        return kl_and_mean_responsibility(mu, logvar, target, eps, mean_responsibility=False)[0]

    def elbo_terms(target_x, eps_z, eps_kl):
        mu, logvar = game.encoder(target_x.detach())
        rec = reconstruction_error(target_x, game.decoder(mu + eps_z * torch.exp(0.5 * logvar)))
        return rec, kl(mu, logvar, prior.detach(), eps_kl)

    mu, logvar = game.encoder(x)
    x_hat = game.decoder(mu + noise.z * torch.exp(0.5 * logvar))
    loss_real = scale * (
        c.beta_kl * kl(mu, logvar, prior, noise.kl_real).mean() + c.beta_rec * reconstruction_error(x, x_hat).mean()
    )
    x_fake = game.decoder(prior.draw(*noise.prior))
    mc = (None, None) if noise.kl_fake_rec is None else noise.kl_fake_rec.split(b)
    rec_f, kl_f = elbo_terms(x_fake, noise.z_fake_rec[:b], mc[0])
    rec_r, kl_r = elbo_terms(x_hat, noise.z_fake_rec[b:], mc[1])
    exp_elbo = lambda rec, kl_: torch.exp(-c.alpha * scale * (c.beta_rec * rec + c.beta_neg * kl_)).mean()
    return loss_real + (1 / c.alpha) * (exp_elbo(rec_f, kl_f) + exp_elbo(rec_r, kl_r)) / 2


@pytest.mark.parametrize(
    "overrides",
    [{"prior": "standard", "kl_estimator": "analytic"}, {"prior": "mog"}, {"prior": "mog", "prior_with_encoder": True}],
    ids=["standard-analytic", "mog", "mog-prior-with-encoder"],
)
def test_encoder_step_gradient_is_that_of_the_literal_loss_with_attached_targets(overrides):
    """The encoder also learns through rec_r's target x̂ = D(z(φ)), and with prior_with_encoder the prior through
    rec_f's target x_f = D(z_p(ψ)): detaching either target changes these gradients."""
    torch.set_default_dtype(torch.float64)
    try:
        game, x = make_game(**overrides)
        x = x.double()
        players = [game.encoder] + ([game.prior] if game.config.prior_with_encoder else [])
        params = [p for module in players for p in module.parameters() if p.requires_grad]
        torch.manual_seed(3)
        expected = torch.autograd.grad(literal_encoder_loss(game, x, game.draw_encoder_noise(x)), params)
        torch.manual_seed(3)
        game.encoder_step(x)
        for p, g in zip(params, expected):
            torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)
