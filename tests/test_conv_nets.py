"""The image encoder / decoder: docs/method.md §2.3's layout, shapes per dataset, gradients, channels_last."""

import pytest
import torch
from torch import nn

from core.conv_nets import ConvDecoder, ConvEncoder, ResidualBlock, default_channels

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


@pytest.mark.parametrize("image_shape", SHAPES)
def test_shapes_and_backward(image_shape):
    torch.manual_seed(0)
    z_dim = 16
    encoder, decoder = ConvEncoder(image_shape, z_dim), ConvDecoder(image_shape, z_dim)
    x = torch.rand(4, *image_shape)
    mu, logvar = encoder(x)
    assert mu.shape == logvar.shape == (4, z_dim)
    x_hat = decoder(mu + torch.randn_like(mu) * (0.5 * logvar).exp())
    assert x_hat.shape == x.shape
    ((x_hat - x) ** 2).sum().backward()
    for net in (encoder, decoder):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_default_channels_and_layout():
    assert default_channels((3, 32, 32)) == (64, 128, 256)
    assert default_channels((1, 28, 28)) == (64, 128)
    assert default_channels((1, 8, 8)) == (32, 64)
    with pytest.raises(ValueError, match="64×64"):
        default_channels((3, 64, 64))

    encoder, decoder = ConvEncoder((3, 32, 32), 128), ConvDecoder((3, 32, 32), 128)
    assert encoder.fc.in_features == 256 * 4 * 4 and encoder.fc.out_features == 256
    assert decoder.fc[0].out_features == 256 * 4 * 4
    blocks = [m for m in decoder.body if isinstance(m, ResidualBlock)]
    assert [b.body[0].out_channels for b in blocks] == [256, 128, 64, 64]
    convs = [m for net in (encoder, decoder) for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c for c in convs if c.bias is not None] == [decoder.body[-1]]
    assert decoder.body[-1].kernel_size == (5, 5) and decoder.body[-1].out_channels == 3


def test_residual_block_shortcut():
    assert isinstance(ResidualBlock(8, 8).shortcut, nn.Identity)
    shortcut = ResidualBlock(8, 16).shortcut
    assert isinstance(shortcut, nn.Conv2d) and shortcut.kernel_size == (1, 1) and shortcut.bias is None


@pytest.mark.parametrize("image_shape", [(3, 32, 32), (1, 8, 8)])
def test_channels_last_gives_the_same_output(image_shape):
    torch.manual_seed(0)
    encoder, decoder = ConvEncoder(image_shape, 8), ConvDecoder(image_shape, 8)
    x = torch.rand(4, *image_shape)
    expected_mu, _ = encoder(x)
    expected_x = decoder(expected_mu)
    encoder, decoder = encoder.to(memory_format=torch.channels_last), decoder.to(memory_format=torch.channels_last)
    mu, _ = encoder(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(mu, expected_mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(decoder(mu), expected_x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image_shape", [(3, 32, 32), (1, 8, 8)])
def test_bf16_autocast_inside_the_nets_returns_float32_close_to_fp32(image_shape):
    torch.manual_seed(0)
    encoder, decoder = ConvEncoder(image_shape, 8), ConvDecoder(image_shape, 8)
    x = torch.rand(4, *image_shape)
    mu32, _ = encoder(x)
    x32 = decoder(mu32)
    encoder.autocast = decoder.autocast = "bf16"
    mu, logvar = encoder(x)
    x_hat = decoder(mu32)
    assert mu.dtype == logvar.dtype == x_hat.dtype == torch.float32
    torch.testing.assert_close(mu, mu32, rtol=0.05, atol=0.05)
    torch.testing.assert_close(x_hat, x32, rtol=0.05, atol=0.05)
    ((x_hat - x) ** 2).sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in decoder.parameters())
    with pytest.raises(ValueError, match="unknown autocast 'fp16'"):
        ConvEncoder(image_shape, 8, autocast="fp16")
