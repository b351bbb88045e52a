"""core.linear: nn.Linear on oneDNN gives F.linear's values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.linear import ONEDNN, Linear, linear, uses_onednn


@pytest.mark.skipif(not ONEDNN, reason="this PyTorch has no oneDNN")
@pytest.mark.parametrize(("n", "n_in", "n_out"), [(512, 2, 256), (1024, 256, 256), (512, 256, 4), (1, 3, 5)])
def test_values_and_gradients_equal_f_linear(n, n_in, n_out):
    generator = torch.Generator().manual_seed(n + n_in + n_out)
    x, weight, bias = (
        torch.randn(*shape, generator=generator).requires_grad_() for shape in ((n, n_in), (n_out, n_in), (n_out,))
    )
    assert uses_onednn(x, weight)
    upstream = torch.randn(n, n_out, generator=generator)
    fast, plain = linear(x, weight, bias), F.linear(x, weight, bias)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4)  # sums of 256 products of size ~1
    for got, want in zip(
        torch.autograd.grad(fast, (x, weight, bias), upstream), torch.autograd.grad(plain, (x, weight, bias), upstream)
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_falls_back_to_f_linear_outside_cpu_float32_matrices():
    x, weight = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    assert not uses_onednn(x, weight)
    assert torch.equal(linear(x, weight), F.linear(x, weight))
    assert not uses_onednn(torch.randn(2, 4, 3), torch.randn(2, 3))


def test_module_is_a_drop_in_nn_linear():
    torch.manual_seed(0)
    plain = nn.Linear(3, 2)
    torch.manual_seed(0)
    fast = Linear(3, 2)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(5, 3)
    torch.testing.assert_close(fast(x), plain(x))


@pytest.mark.skipif(not ONEDNN, reason="this PyTorch has no oneDNN")
def test_backward_computes_only_the_gradients_asked_for(monkeypatch):
    """autograd.grad on one player's parameters skips the other player's weight products (as built-in nodes do),
    and every gradient that is asked for equals the full backward's."""
    import core.linear

    torch.manual_seed(0)
    encoder, decoder = Linear(3, 8), Linear(8, 2)
    x = torch.randn(16, 3)
    loss = decoder(torch.relu(encoder(x))).square().sum()
    products = []
    product = core.linear._product
    counted = lambda a, b, bias=None: products.append(a.shape) or product(a, b, bias)
    monkeypatch.setattr(core.linear, "_product", counted)
    encoder_grads = torch.autograd.grad(loss, list(encoder.parameters()), retain_graph=True)
    # decoder: only its input gradient (16, 2)·(2, 8); encoder: its weight gradient; no decoder weight product
    assert products == [(16, 2), (8, 16)]
    products.clear()
    decoder_grads = torch.autograd.grad(loss, list(decoder.parameters()), retain_graph=True)
    assert products == [(2, 16)]  # the decoder's weight gradient alone
    loss.backward()
    for got, param in zip(encoder_grads + decoder_grads, [*encoder.parameters(), *decoder.parameters()]):
        torch.testing.assert_close(got, param.grad)
