"""The mixture log-density as a quadratic form and its custom autograd function (core/mixture.py)."""

import itertools

import pytest
import torch
import torch.distributions as D

import core.mixture
from core.mixture import component_log_densities, mixture_log_prob, mixture_logits


def random_mixture(n: int, k: int, d: int, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=generator, dtype=dtype)
    mu = torch.randn(k, d, generator=generator, dtype=dtype)
    logvar = 0.5 * torch.randn(k, d, generator=generator, dtype=dtype)
    log_w = torch.log_softmax(torch.randn(k, generator=generator, dtype=dtype), 0)
    return z, mu, logvar, log_w


def torch_mixture(mu, logvar, log_w) -> D.MixtureSameFamily:
    components = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    return D.MixtureSameFamily(D.Categorical(logits=log_w), components)


@pytest.fixture(params=["compiled", "eager-one-block", "eager-small-blocks"])
def block_rows(request, monkeypatch):
    """Run each test on each forward: the torch.compile'd loop over rows (the 2D default on CPU), and eager PyTorch
    with the whole input in one block and with blocks of a few rows (the blocked loop)."""
    compiled = request.param == "compiled"
    for fused in (core.mixture._FUSED_ROWS, core.mixture._FUSED_PROJECTED):
        assert fused.enabled, "torch.compile is off here (PRIORSTUDY_COMPILE=0 or a failed compile)"
        monkeypatch.setattr(fused, "enabled", compiled)
    monkeypatch.setattr(core.mixture, "CPU_BLOCK_ELEMENTS", 16 if request.param == "eager-small-blocks" else 100_000)
    return request.param


def test_component_log_densities_match_torch_distributions():
    z, mu, logvar, _ = random_mixture(50, 7, 3)
    expected = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z.unsqueeze(1))
    torch.testing.assert_close(component_log_densities(z, mu, logvar), expected)


def test_log_prob_and_mean_responsibility_match_torch_distributions(block_rows):
    z, mu, logvar, log_w = random_mixture(37, 5, 3)
    log_p, r_bar = mixture_log_prob(z, mu, logvar, log_w)
    torch.testing.assert_close(log_p, torch_mixture(mu, logvar, log_w).log_prob(z))
    torch.testing.assert_close(r_bar, torch.softmax(mixture_logits(z, mu, logvar, log_w), 1).mean(0))
    assert r_bar.sum().item() == pytest.approx(1.0)


def test_log_prob_is_stable_far_from_every_component(block_rows):
    """Points whose log-densities are all around −1e4 (exp underflows) still get the exact logsumexp."""
    z, mu, logvar, log_w = random_mixture(20, 4, 2)
    z = z + 300.0
    log_p, r_bar = mixture_log_prob(z, mu, logvar, log_w)
    expected = torch.logsumexp(mixture_logits(z, mu, logvar, log_w), 1)
    assert expected.max() < -1e3
    torch.testing.assert_close(log_p, expected)
    assert torch.isfinite(r_bar).all()


@pytest.mark.parametrize(
    ("needs", "outputs"),
    [
        ((True, True, True, True), "both"),
        ((True, True, True, True), "log_p"),
        ((True, True, True, True), "r_bar"),
        ((True, False, False, False), "both"),
        ((False, True, True, True), "both"),
        ((True, True, False, False), "log_p"),
    ],
)
def test_gradcheck(block_rows, needs, outputs):
    """float64 gradcheck of the hand-written backward, for sets of inputs needing a gradient and each output."""
    inputs = [t.requires_grad_(need) for t, need in zip(random_mixture(13, 4, 2), needs)]
    pick = {"both": lambda out: out, "log_p": lambda out: out[0], "r_bar": lambda out: out[1]}[outputs]
    assert torch.autograd.gradcheck(lambda *args: pick(mixture_log_prob(*args)), inputs)


@pytest.mark.parametrize("needs", [(True, False, False, False), (True, True, True, True), (False, True, False, True)])
def test_gradcheck_without_mean_responsibility(block_rows, needs):
    """A KL alone (r̄ not asked for): with only z needing a gradient the forward keeps r·Y instead of r."""
    inputs = [t.requires_grad_(need) for t, need in zip(random_mixture(13, 4, 2), needs)]
    assert mixture_log_prob(*inputs, mean_responsibility=False)[1] is None
    assert torch.autograd.gradcheck(lambda *args: mixture_log_prob(*args, mean_responsibility=False)[0], inputs)


def test_gradients_equal_autograd_through_logsumexp_and_softmax(block_rows):
    """The custom backward against autograd of the straightforward expression, with random upstream gradients."""
    inputs = [t.requires_grad_() for t in random_mixture(64, 6, 2, seed=3)]
    upstream_p, upstream_r = torch.randn(64, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    log_p, r_bar = mixture_log_prob(*inputs)
    fast = torch.autograd.grad((log_p * upstream_p).sum() + (r_bar * upstream_r).sum(), inputs)
    logits = mixture_logits(*inputs)
    plain = (torch.logsumexp(logits, 1) * upstream_p).sum() + (torch.softmax(logits, 1).mean(0) * upstream_r).sum()
    for got, want in zip(fast, torch.autograd.grad(plain, inputs)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("n", "k"), list(itertools.product([1, 9], [1, 4])))
def test_edge_sizes(block_rows, n, k):
    """One point, one component: K = 1 is N(0, I)'s case, where r̄ = 1 and log p is the Gaussian's."""
    z, mu, logvar, log_w = random_mixture(n, k, 2)
    log_p, r_bar = mixture_log_prob(z, mu, logvar, log_w)
    torch.testing.assert_close(log_p, torch_mixture(mu, logvar, log_w).log_prob(z))
    if k == 1:
        torch.testing.assert_close(r_bar, torch.ones(1, dtype=torch.float64))


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(function, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    fused = core.mixture._CompiledOnce(core.mixture.mixture_rows_projected)
    features, weights, y = torch.randn(7, 5), torch.randn(5, 3), torch.randn(3, 4)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        log_p, r_y = fused(features, weights, y.T.contiguous())
    assert not fused.enabled
    torch.testing.assert_close(log_p, torch.logsumexp(features @ weights, 1))
    torch.testing.assert_close(r_y, torch.softmax(features @ weights, 1) @ y)


@pytest.mark.parametrize("z_grad", [False, True], ids=["no-grad (eager)", "z-grad (compiled)"])
def test_float32_agrees_with_float64(z_grad):
    z, mu, logvar, log_w = random_mixture(5000, 64, 2, seed=1)
    log_p64, r64 = mixture_log_prob(z.requires_grad_(z_grad), mu, logvar, log_w)
    z32 = z.detach().float().requires_grad_(z_grad)
    log_p32, r32 = mixture_log_prob(z32, mu.float(), logvar.float(), log_w.float())
    torch.testing.assert_close(log_p32.double(), log_p64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(r32.double(), r64, rtol=1e-4, atol=1e-6)
