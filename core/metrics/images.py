"""Image metrics (docs/method.md §2.3): Fréchet distance, k-NN precision / recall, latent probes,
assignment entropy, and the feature extractors they run on.

Features come from pytorch-fid's FID Inception-v3 (2048-d pool3) when its weights file is given (metric names
fid_gen / fid_rec), otherwise from a small classifier trained on the dataset (fd_classifier_gen / fd_classifier_rec):
a Fréchet distance on other features is not an FID and is never reported under that name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from core.checkpoint import CheckpointError, read_plain_data
from core.config import ConfigError
from core.losses import responsibility_regularizer

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_WEIGHTS_FILE}"
)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(torch.float32)


# --- Fréchet distance -------------------------------------------------------------------------------------------


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of (N, D) features, in float64; the covariance is unbiased (np.cov)."""
    features = _as_numpy(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): pytorch-fid's own `calculate_frechet_distance`,

        d² = ||mu1 − mu2||² + Tr(sigma1 + sigma2 − 2·(sigma1·sigma2)^½),

    after a shape check that names the shapes (pytorch-fid asserts). Its `sqrtm(disp=False)` warns in SciPy 1.17
    (pyproject pins scipy < 1.18, where `disp` is gone)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu1, mu2 = np.atleast_1d(_as_numpy(mu1)), np.atleast_1d(_as_numpy(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_numpy(sigma1)), np.atleast_2d(_as_numpy(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `disp` argument is deprecated", DeprecationWarning)
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps))


# --- k-NN precision and recall ----------------------------------------------------------------------------------


def _chunk_rows(num_columns: int, chunk_size: int | None) -> int:
    """Rows per distance block: about 16M distances (64 MiB in float32) unless given."""
    return chunk_size or max(1, 2**24 // max(num_columns, 1))


def _knn_radii(points: torch.Tensor, k: int, chunk_size: int | None) -> torch.Tensor:
    """Each point's distance to its k-th nearest neighbour in `points`, the point itself not counted."""
    if points.shape[0] <= k:
        raise ValueError(f"k = {k} neighbours need more than {k} points, got {points.shape[0]}")
    rows = _chunk_rows(points.shape[0], chunk_size)
    # The smallest distance in each row is the point to itself, so the k-th neighbour is the (k + 1)-th value.
    return torch.cat([torch.cdist(chunk, points).kthvalue(k + 1, dim=1).values for chunk in points.split(rows)])


def _share_inside_balls(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk_size: int | None):
    """Share of `queries` within distance radii[i] of some centres[i]."""
    rows = _chunk_rows(centres.shape[0], chunk_size)
    inside = sum((torch.cdist(chunk, centres) <= radii).any(dim=1).sum() for chunk in queries.split(rows))
    return float(inside) / queries.shape[0]


def precision_recall(
    real_features, fake_features, k_precision: int = 3, k_recall: int = 4, chunk_size: int | None = None
) -> tuple[float, float]:
    """k-NN manifold precision and recall (Kynkäänniemi et al. 2019) of generated against real features.

    A point's ball has radius = distance to its k-th nearest neighbour within its own set (itself not counted).
    precision = share of generated points inside any real ball (k = k_precision);
    recall = share of real points inside any generated ball (k = k_recall).
    Distances are computed in blocks of `chunk_size` rows, on the features' device, never as one N×N matrix.
    """
    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    fake = fake.to(real.device)
    precision = _share_inside_balls(fake, real, _knn_radii(real, k_precision, chunk_size), chunk_size)
    recall = _share_inside_balls(real, fake, _knn_radii(fake, k_recall, chunk_size), chunk_size)
    return precision, recall


def generation_scores(real_features, fake_features, k_precision: int = 3, k_recall: int = 4) -> dict[str, float]:
    """{frechet_distance, precision, recall} of generated (or reconstructed) against real features.

    The caller names the Fréchet distance after its extractor: f"{extractor.metric_prefix}_gen" (fid_gen or
    fd_classifier_gen), likewise _rec.
    """
    precision, recall = precision_recall(real_features, fake_features, k_precision, k_recall)
    distance = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
    return {"frechet_distance": distance, "precision": precision, "recall": recall}


# --- Feature extractors -----------------------------------------------------------------------------------------


class FeatureExtractor(Protocol):
    """Images (N, C, H, W) in [0, 1] (generated ones may stray outside) -> features (N, D)."""

    metric_prefix: str  # "fid" or "fd_classifier": the name of the Fréchet distance on these features

    def features(self, images: torch.Tensor) -> torch.Tensor: ...


def quantize_images(images: torch.Tensor) -> torch.Tensor:
    """To the uint8 grid and back as the paper's code does: clip(255·x, 0, 255) cast to uint8, which truncates
    (0.7/255 becomes 0, not 1), then /255. Images already on the grid (k/255) pass unchanged."""
    return images.float().mul(255).clamp(0, 255).to(torch.uint8).float().div(255)


def prepare_for_inception(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) in [0, 1] -> (N, 3, 299, 299) in [−1, 1]: uint8 truncation, grey repeated to 3 channels,
    bilinear resize (align_corners=False, as pytorch-fid), then 2x − 1."""
    x = quantize_images(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


def fid_inception_v3() -> nn.Module:
    """pytorch-fid's FID Inception-v3, randomly initialised: torchvision's Inception3 (1,008 classes, no aux head)
    with the blocks that TensorFlow's graph computes differently replaced by pytorch-fid's. Its state dict has the
    layout of the weights file; pytorch-fid's own constructor would download that file, so it is not used."""
    try:
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
    except ImportError as err:
        raise ImportError("the FID Inception network needs pytorch-fid: pip install pytorch-fid") from err
    inception = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    inception.Mixed_5b = FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = FIDInceptionE_1(1280)
    inception.Mixed_7c = FIDInceptionE_2(2048)
    return inception


class InceptionPool3(nn.Module):
    """(N, 3, 299, 299) in [−1, 1] -> (N, 2048): an FID Inception-v3 up to its final average pooling."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        i = inception
        self.net = nn.Sequential(
            i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2),
            i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2),
            i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e,
            i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def check_inception_weights(weights_path: str | os.PathLike) -> None:
    """Raise unless `weights_path` holds pytorch-fid's FID Inception weights: FileNotFoundError saying where to get
    the file when it is missing, ConfigError naming what is wrong when it holds something else. Reads the whole
    file, so that a wrong one fails before any training rather than after it."""
    load_inception(weights_path)


def load_inception(weights_path: str | os.PathLike) -> InceptionPool3:
    """The FID Inception pool3 network with pytorch-fid's weights, read from a local file only (eval mode, frozen);
    the errors of `check_inception_weights`. The file is read as plain data (no code in it runs)."""
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(
            f"FID Inception weights not found at {os.fspath(weights_path)!r}: download {INCEPTION_WEIGHTS_FILE} "
            f"from {INCEPTION_WEIGHTS_URL} and put it there (or pass its path); without it, the Fréchet distance "
            f"is computed on a trained classifier's features and reported as fd_classifier"
        )
    what = "pytorch-fid's FID Inception weights"
    get_it = f"download {INCEPTION_WEIGHTS_FILE} from {INCEPTION_WEIGHTS_URL}"
    try:
        state = read_plain_data(weights_path, what)
    except CheckpointError as err:
        raise ConfigError(f"inception_weights: {err}; {get_it}") from None
    inception = fid_inception_v3()
    problem = _state_dict_mismatch(state, inception.state_dict())
    if problem:
        raise ConfigError(f"inception_weights: {os.fspath(weights_path)} is not {what}: {problem}; {get_it}")
    inception.load_state_dict(state)
    model = InceptionPool3(inception).eval()
    model.requires_grad_(False)
    return model


def _state_dict_mismatch(state, expected: dict[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading strictly into a network whose state dict is `expected` (None: nothing)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a state dict"
    missing = [key for key in expected if key not in state]
    unknown = [key for key in state if key not in expected]
    misfits = [
        f"{key!r} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
        if isinstance(value, torch.Tensor)
        else f"{key!r} is a {type(value).__name__}, not a tensor"
        for key, value in state.items()
        if key in expected and not (isinstance(value, torch.Tensor) and value.shape == expected[key].shape)
    ]
    parts = misfits[:1]
    if unknown:
        parts.insert(0, f"it has {len(unknown)} key(s) the network lacks (e.g. {unknown[0]!r})")
    if missing:
        parts.insert(0, f"it lacks {len(missing)} of the network's {len(expected)} tensors (e.g. {missing[0]!r})")
    return ", ".join(parts) or None


class InceptionFeatures:
    """FeatureExtractor on the FID Inception: prepare_for_inception, then pool3, in batches of `batch_size`.

    train_mode=True runs Inception's BatchNorm on batch statistics, as the paper's reported FID does *(quirk)*.
    """

    metric_prefix = "fid"

    def __init__(self, model: nn.Module, batch_size: int = 50, train_mode: bool = False):
        self.model = model
        self.batch_size = batch_size
        self.train_mode = train_mode

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.model.train(self.train_mode)
        device = next(self.model.parameters()).device
        return torch.cat(
            [self.model(prepare_for_inception(batch.to(device))) for batch in images.split(self.batch_size)]
        )


class FeatureClassifier(nn.Module):
    """A small CNN classifier whose pooled features (4·width dims) stand in for Inception's when there are no
    Inception weights: 3 × [Conv3×3+BN+ReLU] (the last two with stride 2), global average pooling, Linear head."""

    metric_prefix = "fd_classifier"

    def __init__(self, in_channels: int, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 1_024) -> torch.Tensor:
        """(N, C, H, W) -> (N, 4·width) penultimate features, eval mode, images quantised like Inception's input."""
        self.eval()
        device = self.head.weight.device
        return torch.cat([self.body(quantize_images(batch.to(device))) for batch in images.split(batch_size)])


def train_feature_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 5,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 32,
) -> FeatureClassifier:
    """Train a FeatureClassifier on (images, labels) with Adam and cross-entropy, on the images' device.

    The seed fixes the initialisation and the batch order without touching torch's global random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(images.shape[1], int(labels.max()) + 1, width).to(images.device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    labels = labels.to(images.device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator).to(images.device)
        for idx in order.split(batch_size):
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


# --- Latent-space metrics ---------------------------------------------------------------------------------------


def probe_classifiers() -> dict:
    """The unfitted probes, as the paper's code builds them: svm_* = libsvm's SVC (linear kernel, C = 0.025,
    one-vs-one) with max_iter 2,000 / 10,000, the iteration cap being what tells "few" from "many" (liblinear's
    LinearSVC would converge in both and erase the difference); knn_* = k-nearest neighbours with k = 5 / 100."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return {
        "svm_few": SVC(kernel="linear", C=0.025, max_iter=2_000),
        "svm_many": SVC(kernel="linear", C=0.025, max_iter=10_000),
        "knn_few": KNeighborsClassifier(n_neighbors=5),
        "knn_many": KNeighborsClassifier(n_neighbors=100),
    }


def latent_probes(train_z, train_y, test_z, test_y) -> dict[str, float]:
    """Test accuracy of the `probe_classifiers` fitted on the whole train set: {svm_few, svm_many, knn_few, knn_many}.

    Latents are standardised with a StandardScaler fitted on train. An SVM stopped at its iteration cap is the
    point of svm_few, so libsvm's ConvergenceWarning is silenced here (and only here).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    train_y, test_y = _as_numpy(train_y).astype(np.int64), _as_numpy(test_y).astype(np.int64)
    scaler = StandardScaler().fit(_as_numpy(train_z))
    train_x, test_x = scaler.transform(_as_numpy(train_z)), scaler.transform(_as_numpy(test_z))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {
            name: float(probe.fit(train_x, train_y).score(test_x, test_y))
            for name, probe in probe_classifiers().items()
        }


def assignment_entropy(responsibility_batches: Iterable[torch.Tensor], batch_sizes: Iterable[int]) -> float:
    """Batch-size-weighted mean of H_b = −Σ_k r̄_k·log(r̄_k + 1e-8), divided by log K when log K > 1, where r̄ is
    the mean responsibility over batch b's B·M samples (each tensor is (B·M, K)); H_b = −R of the regulariser.
    1 when every mode takes an equal share, 0 when one mode takes everything."""
    total, weight = 0.0, 0
    for responsibilities, size in zip(responsibility_batches, batch_sizes, strict=True):
        total += size * float(-responsibility_regularizer(responsibilities.detach()))
        weight += size
    if weight == 0:
        raise ValueError("assignment_entropy needs at least one non-empty batch")
    return total / weight


def save_image_grid(path: str | os.PathLike, images: torch.Tensor, nrow: int = 8) -> None:
    """Save images (N, C, H, W), clamped to [0, 1], as one PNG grid with `nrow` images a row."""
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    torchvision.utils.save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow)
