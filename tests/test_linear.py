"""core.linear: nn.Linear on oneDNN gives F.linear's values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.linear import ONEDNN, Linear, Sequential, linear, linear_relu, uses_onednn


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
    product, weight_product = core.linear._product, core.linear._weight_product
    monkeypatch.setattr(core.linear, "_product", lambda a, b, *rest: products.append(a.shape) or product(a, b, *rest))
    monkeypatch.setattr(
        core.linear, "_weight_product", lambda g, x: products.append(g.t().shape) or weight_product(g, x)
    )
    encoder_grads = torch.autograd.grad(loss, list(encoder.parameters()), retain_graph=True)
    # decoder: only its input gradient (16, 2)·(2, 8); encoder: its weight gradient; no decoder weight product
    assert products == [(16, 2), (8, 16)]
    products.clear()
    decoder_grads = torch.autograd.grad(loss, list(decoder.parameters()), retain_graph=True)
    assert products == [(2, 16)]  # the decoder's weight gradient alone
    loss.backward()
    for got, param in zip(encoder_grads + decoder_grads, [*encoder.parameters(), *decoder.parameters()]):
        torch.testing.assert_close(got, param.grad)


@pytest.mark.skipif(not ONEDNN, reason="this PyTorch has no oneDNN")
def test_weight_gradient_equals_f_linears():
    generator = torch.Generator().manual_seed(1)
    x, weight = torch.randn(1024, 256, generator=generator), torch.randn(256, 256, generator=generator)
    upstream = torch.randn(1024, 256, generator=generator)
    got = torch.autograd.grad(linear(x, weight.requires_grad_()), weight, upstream)[0]
    want = torch.autograd.grad(F.linear(x, weight), weight, upstream)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)  # sums of 1024 products of size ~1


@pytest.mark.skipif(not ONEDNN, reason="this PyTorch has no oneDNN")
@pytest.mark.parametrize(("n", "n_in", "n_out"), [(512, 2, 256), (1024, 256, 256), (64, 3, 5)])
def test_linear_relu_values_and_gradients_equal_relu_of_f_linear(n, n_in, n_out):
    """The ReLU epilogue: relu(x·Wᵀ + b) and its gradients, with about half the pre-activations negative."""
    generator = torch.Generator().manual_seed(n)
    x, weight, bias = (
        torch.randn(*shape, generator=generator).requires_grad_() for shape in ((n, n_in), (n_out, n_in), (n_out,))
    )
    upstream = torch.randn(n, n_out, generator=generator)
    fast, plain = linear_relu(x, weight, bias), torch.relu(F.linear(x, weight, bias))
    assert 0.3 < (plain == 0).float().mean() < 0.7
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4)
    for got, want in zip(
        torch.autograd.grad(fast, (x, weight, bias), upstream), torch.autograd.grad(plain, (x, weight, bias), upstream)
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_sequential_fuses_linear_relu_pairs_and_keeps_nn_sequentials_state_dict():
    torch.manual_seed(0)
    layers = [Linear(2, 16), nn.ReLU(), Linear(16, 16), nn.ReLU(), Linear(16, 3)]
    fast = Sequential(*layers)
    plain = nn.Sequential(*layers)
    assert (
        list(fast.state_dict())
        == list(plain.state_dict())
        == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    )
    x = torch.randn(64, 2, requires_grad=True)
    torch.testing.assert_close(fast(x), plain(x))
    for got, want in zip(
        torch.autograd.grad(fast(x).square().sum(), [x, *fast.parameters()]),
        torch.autograd.grad(plain(x).square().sum(), [x, *plain.parameters()]),
    ):
        torch.testing.assert_close(got, want)
    if ONEDNN:  # two fused nodes and one plain: the graph has no ReLU node of its own
        names, node = [], fast(x).grad_fn
        while node is not None:
            names.append(type(node).__name__)
            node = next(
                (n for n, _ in node.next_functions if n is not None and "AccumulateGrad" not in type(n).__name__), None
            )
        assert names == ["_OneDNNLinearBackward"] * 3
