import math

import pytest
import torch
import torch.distributions as D

from core.losses import (
    kl_and_mean_responsibility,
    kl_standard_normal,
    mixture_terms,
    responsibility_regularizer,
)
from core.mixture import component_log_densities
from core.nets import MLPEncoder
from core.priors import LogvarClip, Mixture, MixtureOfGaussians, StandardNormal, VampPrior, vamp_to_mog


def torch_mixture(mix: Mixture) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(
        D.Categorical(logits=mix.log_w), D.Independent(D.Normal(mix.mu, torch.exp(0.5 * mix.logvar)), 1)
    )


def test_component_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    z, mu, logvar = torch.randn(50, 3, generator=g), torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    expected = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z.unsqueeze(1))
    torch.testing.assert_close(component_log_densities(z, mu, logvar), expected, rtol=1e-4, atol=1e-4)


def test_mixture_log_prob_and_responsibilities_match_torch_distributions():
    torch.manual_seed(1)
    prior = MixtureOfGaussians(5, 2, learnable_weights=True)
    with torch.no_grad():
        prior.weight_logits.copy_(torch.randn(5))
    mix = prior.mixture()
    z = torch.randn(40, 2) * 2
    log_p, resp = mixture_terms(z, mix)
    reference = torch_mixture(mix.detach())
    torch.testing.assert_close(log_p, reference.log_prob(z), rtol=1e-4, atol=1e-4)
    joint = reference.component_distribution.log_prob(z.unsqueeze(1)) + mix.log_w.detach()
    torch.testing.assert_close(resp, torch.softmax(joint, 1), rtol=1e-4, atol=1e-5)


def test_monte_carlo_kl_of_one_component_mixture_approaches_the_analytic_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(8, 2) * 0.5, torch.randn(8, 2) * 0.3
    eps = torch.randn(8, 20_000, 2)
    mc, _ = kl_and_mean_responsibility(mu, logvar, StandardNormal(2).mixture(), eps)
    torch.testing.assert_close(mc, kl_standard_normal(mu, logvar), rtol=0.03, atol=0.01)


def test_analytic_kl_matches_torch_distributions():
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4)
    q = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = D.Independent(D.Normal(torch.zeros(4), torch.ones(4)), 1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), D.kl_divergence(q, p))


def test_regularizer_is_minus_one_at_uniform_and_zero_at_one_hot_responsibilities():
    k = 64
    uniform = torch.full((100, k), 1.0 / k)
    assert responsibility_regularizer(uniform).item() == pytest.approx(-1.0, abs=1e-5)
    one_hot = torch.zeros(100, k)
    one_hot[:, 3] = 1
    assert responsibility_regularizer(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    # K = 2: log 2 < 1, so no division: the plain negative entropy −log 2
    assert responsibility_regularizer(torch.full((10, 2), 0.5)).item() == pytest.approx(-math.log(2), abs=1e-6)


def test_soft_clip_is_identity_inside_and_saturates_far_outside():
    clip = LogvarClip(2, sharpness=10.0)
    clip.set_bounds(torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.0]))
    centre = torch.zeros(1, 2)
    torch.testing.assert_close(clip(centre), centre, atol=1e-6, rtol=0)
    inside = torch.tensor([[0.5, -0.3]])
    torch.testing.assert_close(clip(inside), inside, atol=1e-2, rtol=0)
    far = torch.tensor([[50.0, -50.0], [-40.0, 30.0]])
    torch.testing.assert_close(clip(far), torch.tensor([[2.0, -1.0], [-2.0, 1.0]]), atol=1e-6, rtol=0)
    # at a bound the soft clip lies below it by log(2)/s (plus softplus(-10)/s from the far bound)
    s = 10.0 / 4.0
    at_hi = clip(torch.tensor([[2.0, 0.0]]))[0, 0]
    assert at_hi.item() == pytest.approx(2.0 - math.log(2) / s + math.log1p(math.exp(-10)) / s, abs=1e-6)


def test_clip_with_equal_bounds_returns_the_bound_and_inactive_clip_is_identity():
    clip = LogvarClip(1)
    values = torch.tensor([[3.0], [-7.0]])
    torch.testing.assert_close(clip(values), values)
    clip.set_bounds(torch.tensor([0.5]), torch.tensor([0.5]))
    torch.testing.assert_close(clip(values), torch.full((2, 1), 0.5))


def test_sampling_gradients_reach_means_and_logvars_but_not_weights():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(4, 2, learnable_weights=True)
    prior.sample(256, with_grad=True).pow(2).sum().backward()
    assert prior.mu.grad.abs().sum() > 0 and prior.logvar.grad.abs().sum() > 0
    assert prior.weight_logits.grad is None
    assert not prior.sample(8, with_grad=False).requires_grad


def test_samples_follow_the_mixture():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(2, 1, learnable_weights=False)
    with torch.no_grad():
        prior.mu.copy_(torch.tensor([[-5.0], [5.0]]))
        prior.logvar.fill_(math.log(0.01))
    z = prior.sample(4000)
    assert ((z - 5).abs() < 0.5).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert ((z.abs() - 5).abs() < 0.5).all()


def test_active_modes_counts_weights_at_least_one_over_k_squared():
    prior = MixtureOfGaussians(4, 2, learnable_weights=True)
    with torch.no_grad():
        prior.weight_logits.copy_(torch.tensor([0.0, 0.0, 0.0, -20.0]))
    assert prior.active_modes() == 3
    assert StandardNormal(2).active_modes() == 1


def test_vamp_to_mog_keeps_the_components_and_the_weights():
    torch.manual_seed(0)
    encoder = MLPEncoder(2, 2)
    vamp = VampPrior(encoder, torch.randn(6, 2), z_dim=2, learnable_weights=True)
    with torch.no_grad():
        vamp.weight_logits.copy_(torch.randn(6))
    before = vamp.mixture(with_grad=False)
    mog = vamp_to_mog(vamp)
    after = mog.mixture(with_grad=False)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)
    # the paper's quirk: new logits are the old probabilities, near uniform
    quirk = vamp_to_mog(vamp, quirk_weights=True)
    torch.testing.assert_close(quirk.weight_logits.detach(), before.log_w.exp())


def test_vamp_components_are_the_encoder_at_the_pseudo_inputs_and_images_are_squashed():
    torch.manual_seed(0)
    encoder = MLPEncoder(2, 2)
    data = torch.randn(5, 2)
    vamp = VampPrior(encoder, data, z_dim=2, learnable_weights=False)
    mu, _logvar = encoder(data)
    torch.testing.assert_close(vamp.mixture().mu, mu)
    image_vamp = VampPrior(
        lambda u: (u.flatten(1)[:, :2], u.flatten(1)[:, 2:4]),
        torch.randn(3, 1, 2, 2) * 3,
        z_dim=2,
        learnable_weights=False,
        squash=True,
    )
    inputs = image_vamp.inputs()
    assert inputs.shape == (3, 1, 2, 2) and inputs.min() >= 0 and inputs.max() <= 1
