"""Priors p_ψ(z): N(0, I), a mixture of Gaussians, and the VampPrior, behind one interface.

Every prior is a diagonal Gaussian mixture at heart: `mixture()` returns its (mu, logvar, log_w), with the
variance clip applied, so sampling, KL, responsibilities and metrics all see the same clipped prior and the
trainer never asks which prior it has.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TrainConfig


class Mixture(NamedTuple):
    """A diagonal Gaussian mixture: means (K, z), log-variances (K, z), log-weights (K,)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    log_w: torch.Tensor

    def detach(self) -> Mixture:
        return Mixture(self.mu.detach(), self.logvar.detach(), self.log_w.detach())

    def draw(self, index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mu[k] + ε·exp(½·logvar[k]) for given component indices k (n,) and noise ε (n, z)."""
        return self.mu[index] + eps * torch.exp(0.5 * self.logvar[index])


class LogvarClip(nn.Module):
    """Soft clip of the prior's log-variances into [lo_d, hi_d] per latent dimension (docs/method.md §1.6).

    clipped = logvar − softplus_s(logvar − hi) + softplus_s(lo − logvar), softplus_s(x) = log(1 + e^{s·x})/s
    (= x when s·x > 20), s = sharpness/(|hi − lo| + 1e-8); where hi = lo the result is hi. Inactive until
    `set_bounds` is called (adaptive: at the first introspective iteration; fixed: from the config).
    """

    def __init__(self, z_dim: int, sharpness: float = 10.0):
        super().__init__()
        self.sharpness = sharpness
        self.register_buffer("lo", torch.zeros(z_dim))
        self.register_buffer("hi", torch.zeros(z_dim))
        self.register_buffer("active", torch.tensor(False))
        self.is_active = False  # host copy of `active`: the forward never reads a device tensor (no sync)
        self.register_load_state_dict_post_hook(_read_active)

    def set_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo.copy_(lo.detach())
        self.hi.copy_(hi.detach())
        self.active.fill_(True)
        self.is_active = True

    def forward(self, logvar: torch.Tensor) -> torch.Tensor:
        if not self.is_active:
            return logvar
        s = self.sharpness / ((self.hi - self.lo).abs() + 1e-8)
        clipped = logvar - F.softplus(s * (logvar - self.hi)) / s + F.softplus(s * (self.lo - logvar)) / s
        return torch.where(self.hi == self.lo, self.hi, clipped)


def _read_active(clip: LogvarClip, incompatible_keys) -> None:
    clip.is_active = bool(clip.active)


class Prior(nn.Module):
    """Base prior: mixture weights w = softmax(ω), ω zeros, learnable only with `learnable_weights` (LC)."""

    def __init__(self, num_components: int, z_dim: int, learnable_weights: bool, clip_sharpness: float = 10.0):
        super().__init__()
        self.num_components = num_components
        self.z_dim = z_dim
        logits = torch.zeros(num_components)
        if learnable_weights:
            self.weight_logits = nn.Parameter(logits)
        else:
            self.register_buffer("weight_logits", logits)
        self.clip = LogvarClip(z_dim, clip_sharpness)

    def raw_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unclipped (mu, logvar) of the components."""
        raise NotImplementedError

    def mixture(self, with_grad: bool = True) -> Mixture:
        """The prior as (mu, clipped logvar, log_w); built without autograd and detached when `with_grad` is False
        (a free MoG's mu is the parameter itself, which no-grad mode alone would hand out still attached)."""
        with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
            mu, logvar = self.raw_components()
            mixture = Mixture(mu, self.clip(logvar), F.log_softmax(self.weight_logits, dim=0))
        return mixture if with_grad else mixture.detach()

    def weights(self) -> torch.Tensor:
        return F.softmax(self.weight_logits.detach(), dim=0)

    def sample_noise(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The randomness of `sample`: indices k ~ Categorical(w) (all 0 when K = 1), then ε ~ N(0, I) (n, z)."""
        weights = self.weights()
        if self.num_components == 1:
            index = torch.zeros(n, dtype=torch.long, device=weights.device)
        else:
            index = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.z_dim, device=weights.device, dtype=dtype or weights.dtype, generator=generator)
        return index, eps

    def sample(
        self,
        n: int,
        with_grad: bool = False,
        generator: torch.Generator | None = None,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """z = mu[k] + ε·exp(½·logvar[k]), k ~ Categorical(w): gradients reach mu and logvar, never the weights.

        `noise` = (k, ε) as drawn by `sample_noise` replaces the draw (the game draws its randomness up front).
        """
        with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
            mixture = self.mixture(with_grad)
            return mixture.draw(*(noise if noise is not None else self.sample_noise(n, generator)))

    def active_modes(self) -> int:
        return int(is_active(self.weights()).sum())


def is_active(weights):
    """Which components are in use: weight w_k >= 1/K², the paper's threshold (a tensor or an array of K weights)."""
    return weights >= 1.0 / len(weights) ** 2


class StandardNormal(Prior):
    """N(0, I): one component with zero mean and unit variance; nothing to learn."""

    def __init__(self, z_dim: int):
        super().__init__(1, z_dim, learnable_weights=False)
        self.register_buffer("mu", torch.zeros(1, z_dim))
        self.register_buffer("logvar", torch.zeros(1, z_dim))

    def raw_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu, self.logvar


class MixtureOfGaussians(Prior):
    """A free mixture: mu (K, z) and logvar (K, z) are parameters. Direct init: mu ~ N(0,1)/√(K·z), logvar ~ N(0,1)."""

    def __init__(self, num_components: int, z_dim: int, learnable_weights: bool, clip_sharpness: float = 10.0):
        super().__init__(num_components, z_dim, learnable_weights, clip_sharpness)
        self.mu = nn.Parameter(torch.randn(num_components, z_dim) / math.sqrt(num_components * z_dim))
        self.logvar = nn.Parameter(torch.randn(num_components, z_dim))

    def raw_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu, self.logvar


class VampPrior(Prior):
    """Mixture of the encoder's posteriors at K learned pseudo-inputs u: component k = E(u_k).

    u = Wᵀ from a bias-free Linear(K → D) applied to I_K; images squash u with hardtanh into [0, 1].
    The encoder is held by reference (not registered), so its parameters belong to the encoder alone.
    """

    def __init__(
        self,
        encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        init_data: torch.Tensor,
        z_dim: int,
        learnable_weights: bool,
        squash: bool = False,
        clip_sharpness: float = 10.0,
    ):
        num_components = init_data.shape[0]
        super().__init__(num_components, z_dim, learnable_weights, clip_sharpness)
        self._encoder = [encoder]
        self.input_shape = tuple(init_data.shape[1:])
        self.squash = squash
        self.pseudo_inputs = nn.Linear(num_components, init_data[0].numel(), bias=False)
        with torch.no_grad():
            self.pseudo_inputs.weight.copy_(init_data.reshape(num_components, -1).T)
        self.register_buffer("identity", torch.eye(num_components))

    def inputs(self) -> torch.Tensor:
        u = self.pseudo_inputs(self.identity)
        if self.squash:
            u = F.hardtanh(u, 0.0, 1.0)
        return u.reshape(self.num_components, *self.input_shape)

    def raw_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encoder[0](self.inputs())


def vamp_to_mog(vamp: VampPrior, quirk_weights: bool = False) -> MixtureOfGaussians:
    """Freeze a VampPrior into a free MoG with mu, logvar = E(u) (unclipped), keeping the clip module.

    Weights: with learnable weights the new logits are log w (same mixture); the paper's code instead sets them
    to the old probabilities softmax(ω) (`quirk_weights`, protocol 'paper'), which is near uniform.
    """
    learnable = isinstance(vamp.weight_logits, nn.Parameter)
    mog = MixtureOfGaussians(vamp.num_components, vamp.z_dim, learnable, vamp.clip.sharpness)
    with torch.no_grad():
        mu, logvar = vamp.raw_components()
        mog.mu.copy_(mu)
        mog.logvar.copy_(logvar)
        weights = F.softmax(vamp.weight_logits, dim=0)
        mog.weight_logits.copy_(weights if quirk_weights else torch.log(weights))
    mog.clip.load_state_dict(vamp.clip.state_dict())
    return mog.to(device=vamp.identity.device, dtype=vamp.identity.dtype)


def build_prior(
    config: TrainConfig,
    encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    init_data: Callable[[int], torch.Tensor],
) -> Prior:
    """The prior named by `config.prior`; `init_data(K)` gives K data points for the VampPrior's pseudo-inputs."""
    if config.prior == "standard":
        return StandardNormal(config.z_dim)
    if config.prior == "mog":
        return MixtureOfGaussians(config.num_components, config.z_dim, config.learnable_weights, config.clip_sharpness)
    return VampPrior(
        encoder,
        init_data(config.num_components),
        config.z_dim,
        config.learnable_weights,
        squash=config.squash_pseudo_inputs,
        clip_sharpness=config.clip_sharpness,
    )
