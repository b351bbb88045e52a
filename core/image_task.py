"""The image benchmarks as a task of the game (docs/method.md §2.3): MNIST, Fashion-MNIST, CIFAR-10, digits.

What differs from 2D lives here: a fixed train set held on the device and served one epoch per unit, the conv nets
sized by the image shape (channels_last, bf16 autocast with `autocast: bf16`), scale = 1/(C·H·W), the VampPrior's
pseudo-inputs taken from the first K images of the shuffled train set, and the image metrics. The game itself is
the one of core/game.py.

Evaluation never changes training: it runs in eval mode on a forked random state seeded with seed + 29,999, the
BatchNorm refresh before the latent probes runs on a copy of the encoder, and the `paper` protocol's train-mode
passes (core/protocol.py) put the BatchNorm statistics back afterwards.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import torch
from torchvision.utils import make_grid

from core.config import EVAL_SEED_OFFSET, TrainConfig
from core.conv_nets import ConvDecoder, ConvEncoder
from core.data.images import ImageBatches, load_images
from core.losses import mixture_terms, posterior_samples, reconstruction_error, reparameterize
from core.metrics.images import (
    FeatureExtractor,
    InceptionFeatures,
    assignment_entropy,
    feature_statistics,
    frechet_distance,
    generation_scores,
    latent_probes,
    load_inception,
    save_image_grid,
    train_feature_classifier,
)
from core.nets import warn_if_bf16_is_emulated
from core.priors import is_active

matplotlib.use("Agg")  # files only, no display; must precede the pyplot import
import matplotlib.pyplot as plt

# Images a no-grad pass handles at once in eval mode, where the chunk size changes nothing; the `paper` protocol's
# train-mode passes use the training batch size instead (`_metric_batch`).
EVAL_CHUNK = 500
INCEPTION_BATCH = 200
GRID_ROWS = 8


class ImageSplits(NamedTuple):
    """A dataset's train and test splits: images float32 (N, C, H, W) in [0, 1], labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_splits(config: TrainConfig) -> ImageSplits:
    """Both splits of `config.dataset` from `config.data_dir` (DatasetNotFound when absent, unless `download`)."""
    train = load_images(config.dataset, config.data_dir, train=True, download=config.download)
    test = load_images(config.dataset, config.data_dir, train=False, download=config.download)
    return ImageSplits(*train, *test)


class ImageTask:
    """Images: one unit = one epoch over the train set, conv nets, scale 1/(C·H·W).

    `splits` replaces the dataset on disk (benchmarks and tests use random or prepared tensors).
    """

    def __init__(self, config: TrainConfig, device: torch.device, splits: ImageSplits | None = None):
        # loaded now, so that a missing or wrong weights file fails before training, not after it
        self._inception = load_inception(config.inception_weights) if config.inception_weights is not None else None
        if splits is None:
            splits = load_splits(config)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed image shapes: let cuDNN pick its fastest conv kernels
        self.config = config
        self.device = device
        self.image_shape = tuple(splits.train_images.shape[1:])
        self.scale = 1.0 / math.prod(self.image_shape)
        self.generator = torch.Generator().manual_seed(config.seed)  # CPU: the same batch order on every device
        self.train_set = ImageBatches(
            splits.train_images, config.batch_size, self.generator, device, memory_format=torch.channels_last
        )
        self.test_set = ImageBatches(
            splits.test_images, config.batch_size, device=device, shuffle=False, memory_format=torch.channels_last
        )
        self.train_labels, self.test_labels = splits.train_labels.cpu(), splits.test_labels.cpu()
        self._extractor: tuple[FeatureExtractor, dict[str, float]] | None = None

    @property
    def train_images(self) -> torch.Tensor:
        return self.train_set.images

    @property
    def test_images(self) -> torch.Tensor:
        return self.test_set.images

    def make_nets(self, config: TrainConfig) -> tuple[ConvEncoder, ConvDecoder]:
        warn_if_bf16_is_emulated(config.autocast, self.device)
        encoder = ConvEncoder(self.image_shape, config.z_dim, autocast=config.autocast)
        decoder = ConvDecoder(self.image_shape, config.z_dim, autocast=config.autocast)
        return encoder.to(memory_format=torch.channels_last), decoder.to(memory_format=torch.channels_last)

    def batches(self, unit: int) -> Iterator[torch.Tensor]:
        """One epoch: the train set in a fresh random order."""
        return iter(self.train_set)

    def init_data(self, k: int) -> torch.Tensor:
        """The VampPrior's pseudo-inputs start at the first K images of the shuffled train set."""
        n = self.train_set.num_images
        if k > n:
            raise ValueError(f"num_components = {k} pseudo-inputs need at least {k} train images, got {n}")
        order = torch.randperm(n, generator=self.generator)[:k]
        return self.train_images[order.to(self.device)].contiguous()

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    # --------------------------------------------------------------------------------------- evaluation
    @contextmanager
    def _evaluating(self, game):
        """Eval mode and a forked random state seeded for evaluation; both restored afterwards."""
        nets = (game.encoder, game.decoder)
        modes = [net.training for net in nets]
        devices = [self.device.index or torch.cuda.current_device()] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.config.seed + EVAL_SEED_OFFSET)
            for net in nets:
                net.eval()
            try:
                yield
            finally:
                for net, mode in zip(nets, modes):
                    net.train(mode)

    def generate(self, game, n: int, chunk: int = EVAL_CHUNK) -> Iterator[torch.Tensor]:
        """n generated images x = D(z), z ~ p_ψ, in chunks of `chunk`."""
        for start in range(0, n, chunk):
            yield game.decoder(game.prior.sample(min(chunk, n - start)))

    def reconstruct(
        self, game, images: torch.Tensor, stochastic: bool = True, chunk: int = EVAL_CHUNK
    ) -> Iterator[torch.Tensor]:
        """D(z) with z ~ q(z|x) (stochastic) or z = mu, in chunks of `chunk`."""
        for x in images.split(chunk):
            mu, logvar = game.encoder(x)
            yield game.decoder(reparameterize(mu, logvar) if stochastic else mu)

    def _rec_test(self, game) -> float:
        """rec_test = mean over the first eval_samples test images of rec(x, D(mu(x))), eval mode."""
        images = self.test_images[: self.config.eval_samples]
        total = sum(
            reconstruction_error(x, x_hat).sum()
            for x, x_hat in zip(images.split(EVAL_CHUNK), self.reconstruct(game, images, stochastic=False))
        )
        return float(total) / images.shape[0]

    def evaluate(self, game, final: bool) -> dict[str, float]:
        """rec_test at every evaluation; at the end of training also every image metric (`image_metrics`)."""
        with self._evaluating(game):
            metrics = {"rec_test": self._rec_test(game)}
            if final:
                metrics.update(self.image_metrics(game))
        return metrics

    def image_metrics(self, game) -> dict[str, float]:
        """fid_gen / fid_rec (or fd_classifier_gen / _rec), precision, recall, the probes, assignment_entropy.

        Generation quality: `fid_samples` generated images and stochastic reconstructions of `fid_samples` train
        images (a random subset when the set is larger; the whole set otherwise) against those train images, on
        Inception pool3 features when `inception_weights` names the file, else on our classifier's features.
        Under the `paper` protocol the VAE generates and reconstructs these in train mode, and Inception runs in
        train mode *(quirk)*, all in batches of the training batch size; precision and recall use the same features
        as the Fréchet distance. Call inside `_evaluating`.
        """
        c = self.config
        extractor, extractor_metrics = self._feature_extractor()
        metrics = dict(extractor_metrics)
        n_real = min(c.fid_samples, self.train_set.num_images)
        real = self.train_images[torch.randperm(self.train_set.num_images, device=self.device)[:n_real]]
        real_features = extractor.features(real)
        chunk = self._metric_batch(EVAL_CHUNK)
        with self._generation_mode(game):
            fake_features = torch.cat([extractor.features(x) for x in self.generate(game, c.fid_samples, chunk)])
            rec_features = torch.cat([extractor.features(x) for x in self.reconstruct(game, real, chunk=chunk)])
        scores = generation_scores(real_features, fake_features)
        real_stats = feature_statistics(real_features)
        metrics[f"{extractor.metric_prefix}_gen"] = scores["frechet_distance"]
        metrics[f"{extractor.metric_prefix}_rec"] = frechet_distance(*real_stats, *feature_statistics(rec_features))
        metrics["precision"], metrics["recall"] = scores["precision"], scores["recall"]
        metrics.update(self._latent_metrics(game))
        return metrics

    def _metric_batch(self, clean: int) -> int:
        """Batch size of a generation-metric pass: `clean` in eval mode, where it changes nothing; under the `paper`
        protocol, whose train-mode BatchNorm makes every feature depend on its batch, the training batch size (as
        the paper's code: 32 for CIFAR-10, 128 for (F)MNIST)."""
        return self.config.batch_size if self.config.protocol == "paper" else clean

    @contextmanager
    def _generation_mode(self, game):
        """Clean protocol: nothing changes (eval mode). Paper protocol: the VAE in train mode, so BatchNorm uses each
        chunk's statistics as the paper's FID does *(quirk)*; the running statistics it moves are put back."""
        if self.config.protocol != "paper":
            yield
            return
        nets = (game.encoder, game.decoder)
        saved = [[buffer.clone() for buffer in net.buffers()] for net in nets]
        for net in nets:
            net.train()
        try:
            yield
        finally:
            for net, buffers in zip(nets, saved):
                net.eval()
                for buffer, value in zip(net.buffers(), buffers):
                    buffer.copy_(value)

    def _feature_extractor(self) -> tuple[FeatureExtractor, dict[str, float]]:
        """Inception (FID) when the weights file is given; else a classifier trained here, with its test accuracy.

        Built once per run (the classifier's training is seeded, so a resumed run builds the same one) and reused at
        every scored epoch. Inception runs in train mode under the `paper` protocol *(quirk)*.
        """
        if self._extractor is None:
            self._extractor = self._build_feature_extractor()
        return self._extractor

    def _build_feature_extractor(self) -> tuple[FeatureExtractor, dict[str, float]]:
        c = self.config
        if self._inception is not None:
            model = self._inception.to(self.device)
            batch = self._metric_batch(INCEPTION_BATCH)
            return InceptionFeatures(model, batch_size=batch, train_mode=c.protocol == "paper"), {}
        with torch.enable_grad():
            classifier = train_feature_classifier(
                self.train_images, self.train_labels, epochs=c.classifier_epochs, seed=c.seed
            )
        predictions = torch.cat([classifier(x).argmax(1).cpu() for x in self.test_images.split(EVAL_CHUNK)])
        accuracy = float((predictions == self.test_labels).float().mean())
        return classifier, {"classifier_test_accuracy": accuracy}

    def _latent_metrics(self, game) -> dict[str, float]:
        """Probes (svm_few/many, knn_few/many) on one z ~ q(z|x) per image and assignment_entropy on the test set.

        A copy of the encoder first makes one pass over the train set in train mode (BatchNorm statistics refresh),
        then runs in eval mode. Probes fit on `probe_samples` train images (all when None), score on the test set.
        The assignment entropy takes M = `mc_samples` posterior samples per test image (the paper: 100), batches of
        `batch_size`.
        """
        c = self.config
        n_train = self.train_set.num_images
        encoder = copy.deepcopy(game.encoder).train()
        for batch in torch.randperm(n_train, device=self.device).split(c.batch_size):
            encoder(self.train_images[batch])
        encoder.eval()

        def sample_latents(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([reparameterize(*encoder(x)).cpu() for x in images.split(EVAL_CHUNK)])

        subset = torch.randperm(n_train)[: c.probe_samples or n_train]
        metrics = latent_probes(
            sample_latents(self.train_images[subset.to(self.device)]),
            self.train_labels[subset],
            sample_latents(self.test_images),
            self.test_labels,
        )

        prior = game.prior.mixture(with_grad=False)
        responsibilities, sizes = [], []
        for x in self.test_set:
            z, _ = posterior_samples(*encoder(x), c.mc_samples)
            responsibilities.append(mixture_terms(z, prior)[1])
            sizes.append(x.shape[0])
        metrics["assignment_entropy"] = assignment_entropy(responsibilities, sizes)
        return metrics

    # --------------------------------------------------------------------------------------- artifacts
    def write_artifacts(self, game, out_dir: Path, metrics: dict) -> None:
        """samples.png (64 generated images), reconstructions.png (32 test images, each followed by its stochastic
        reconstruction), figure.png (the heaviest prior modes decoded, and the weights), metrics.json."""
        n = GRID_ROWS * GRID_ROWS
        with self._evaluating(game):
            save_image_grid(out_dir / "samples.png", next(self.generate(game, n)), nrow=GRID_ROWS)
            originals = self.test_images[: n // 2]
            reconstructions = torch.cat(list(self.reconstruct(game, originals)))
            pairs = torch.stack([originals, reconstructions], dim=1).flatten(0, 1)
            save_image_grid(out_dir / "reconstructions.png", pairs, nrow=GRID_ROWS)
            prior = game.prior.mixture(with_grad=False)
            weights = prior.log_w.exp()
            modes = game.decoder(prior.mu[weights.argsort(descending=True)[:n]])
        self._plot_modes(out_dir / "figure.png", modes.cpu(), weights.cpu().numpy(), metrics)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))

    def _plot_modes(self, path: Path, modes: torch.Tensor, weights: np.ndarray, metrics: dict) -> None:
        """Left: D(mu_k) of the heaviest modes, row by row; right: every weight, sorted, with the 1/K² threshold."""
        k, m = len(weights), modes.shape[0]
        mosaic = make_grid(modes.clamp(0, 1), nrow=math.ceil(math.sqrt(m)), padding=1, pad_value=0.5)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
        left.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
        left.set(title=f"decoded prior modes D(μ_k), heaviest first ({m} of {k})", xticks=[], yticks=[])
        ranked = np.sort(weights)[::-1]
        right.bar(np.arange(k), ranked, color=np.where(is_active(ranked), "tab:blue", "tab:red"))
        right.axhline(1.0 / k**2, color="tab:red", linestyle="--", label="1/K² (inactive below)")
        right.set(
            title=f"mixture weights ({int((weights >= 1.0 / k**2).sum())}/{k} active)",
            xlabel="mode (sorted)",
            ylabel="weight",
        )
        right.legend()
        fd = next((f"{name} {metrics[name]:.3g}" for name in ("fid_gen", "fd_classifier_gen") if name in metrics), "")
        fig.suptitle(f"{self.config.dataset} · {self.config.model} · prior {self.config.prior} · {fd}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
