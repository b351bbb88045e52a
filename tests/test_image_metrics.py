"""Image metrics on cases with known answers."""

import warnings

import numpy as np
import pytest
import torch

from core.data.images import load_images
from core.metrics.images import (
    FeatureClassifier,
    InceptionFeatures,
    assignment_entropy,
    feature_statistics,
    fid_inception_v3,
    frechet_distance,
    generation_scores,
    latent_probes,
    load_inception,
    precision_recall,
    prepare_for_inception,
    probe_classifiers,
    quantize_images,
    save_image_grid,
    train_feature_classifier,
)


def test_frechet_distance_matches_the_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-8)
    # A common rotation of both Gaussians changes nothing, and makes the covariances full matrices.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_identical_statistics_is_zero():
    features = torch.randn(500, 8) @ torch.randn(8, 8)
    mu, sigma = feature_statistics(features)
    assert mu.shape == (8,) and sigma.shape == (8, 8)
    np.testing.assert_allclose(sigma, np.cov(features.double().numpy(), rowvar=False))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])


def test_precision_recall_identical_and_disjoint_sets():
    points = torch.randn(200, 5)
    assert precision_recall(points, points.clone()) == (1.0, 1.0)
    assert precision_recall(points, points + 100.0) == (0.0, 0.0)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_precision_recall_hand_checked(chunk_size):
    # k = 1: real radii (nearest other real point) 1, 1, 1, 1, 7; fake radii 2, 2, 3, 3.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = torch.tensor([[0.5], [2.5], [50.0], [53.0]])
    precision, recall = precision_recall(real, fake, k_precision=1, k_recall=1, chunk_size=chunk_size)
    assert precision == pytest.approx(2 / 4)  # 0.5 and 2.5 lie in real balls; 50 and 53 do not
    assert recall == pytest.approx(4 / 5)  # 10 is 7.5 from the nearest fake ball's centre 2.5, whose radius is 2


def test_generation_scores_keys_and_identity():
    features = torch.randn(300, 4)
    scores = generation_scores(features, features)
    assert set(scores) == {"frechet_distance", "precision", "recall"}
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert scores["precision"] == scores["recall"] == 1.0


def test_latent_probes_on_separable_latents():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8.0, size=(3, 4))
    train_y, test_y = rng.integers(0, 3, size=600), rng.integers(0, 3, size=200)
    train_z = centres[train_y] + rng.normal(size=(600, 4))
    test_z = centres[test_y] + rng.normal(size=(200, 4))
    scores = latent_probes(torch.from_numpy(train_z), torch.from_numpy(train_y), test_z, test_y)
    assert set(scores) == {"svm_few", "svm_many", "knn_few", "knn_many"}
    assert all(value >= 0.95 for value in scores.values()), scores


def test_probe_classifiers_are_libsvm_svcs_told_apart_by_their_iteration_cap():
    """svm_few / svm_many are libsvm's one-vs-one SVC (not liblinear's LinearSVC, which converges and so erases the
    difference): on 4,000 overlapping points svm_few stops at its 2,000 iterations, svm_many goes on to converge."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    probes = probe_classifiers()
    assert list(probes) == ["svm_few", "svm_many", "knn_few", "knn_many"]
    for name, max_iter in (("svm_few", 2_000), ("svm_many", 10_000)):
        assert type(probes[name]) is SVC, name
        assert (probes[name].kernel, probes[name].C, probes[name].max_iter) == ("linear", 0.025, max_iter)
    assert [(type(probes[n]), probes[n].n_neighbors) for n in ("knn_few", "knn_many")] == [
        (KNeighborsClassifier, 5),
        (KNeighborsClassifier, 100),
    ]
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(4_000, 4)), rng.integers(0, 2, size=4_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        few, many = probes["svm_few"].fit(z, y), probes["svm_many"].fit(z, y)
    assert few.n_iter_.max() == 2_000 and 2_000 < many.n_iter_.max() < 10_000


def test_latent_probes_on_digits_silence_only_their_own_convergence_warning():
    """A real run on scikit-learn's digits (the 64 pixels standing in for latents): sensible accuracies, and the
    ConvergenceWarning of an SVM stopped at its cap (4,000 noisy points) neither escapes nor changes the filters."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning

    digits = load_digits()
    z, y = digits.data, digits.target
    scores = latent_probes(z[:1_500], y[:1_500], z[1_500:], y[1_500:])
    assert set(scores) == {"svm_few", "svm_many", "knn_few", "knn_many"}
    assert scores["svm_few"] >= 0.9 and scores["svm_many"] >= 0.9 and scores["knn_few"] >= 0.9, scores
    assert 0.8 <= scores["knn_many"] < scores["knn_few"], scores

    rng = np.random.default_rng(0)
    noise, labels = rng.normal(size=(4_500, 4)), rng.integers(0, 2, size=4_500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        filters = list(warnings.filters)
        latent_probes(noise[:4_000], labels[:4_000], noise[4_000:], labels[4_000:])
        assert warnings.filters == filters


def test_assignment_entropy_uniform_and_one_hot():
    k = 10
    uniform = [torch.full((20, k), 1 / k), torch.full((50, k), 1 / k)]
    assert assignment_entropy(uniform, [2, 5]) == pytest.approx(1.0, abs=1e-6)
    one_hot = torch.zeros(30, k)
    one_hot[:, 3] = 1.0
    assert assignment_entropy([one_hot], [3]) == pytest.approx(0.0, abs=1e-6)
    # Weighted by batch size: one uniform batch of 1 and one collapsed batch of 3 -> 1/4.
    assert assignment_entropy([uniform[0], one_hot], [1, 3]) == pytest.approx(0.25, abs=1e-6)


def test_quantize_images_truncates_to_uint8_as_the_papers_code():
    """clip(255·x, 0, 255) cast to uint8 (truncation, not rounding), back to x/255; uint8 images pass unchanged."""
    x = torch.tensor([0.7 / 255, 1.6 / 255, 254.9 / 255, 0.5, -0.2, 1.3])
    expected = torch.tensor([0.0, 1.0, 254.0, 127.0, 0.0, 255.0]) / 255  # rounding: 1, 2, 255, 128, 0, 255
    assert torch.equal(quantize_images(x), expected)
    grid = torch.arange(256, dtype=torch.float32) / 255
    assert torch.equal(quantize_images(grid), grid)


def test_prepare_for_inception_quantises_repeats_and_rescales():
    images = torch.full((2, 1, 8, 8), 0.5)
    images[1] = 1.7  # a generated image outside [0, 1] is clipped to 255
    x = prepare_for_inception(images)
    assert x.shape == (2, 3, 299, 299)
    torch.testing.assert_close(x[0], torch.full((3, 299, 299), 2 * 127 / 255 - 1))
    torch.testing.assert_close(x[1], torch.ones(3, 299, 299))


def test_feature_classifier_trains_and_gives_features():
    images, labels = load_images("digits", train=True)
    model = train_feature_classifier(images[:512], labels[:512], epochs=2, seed=0, width=8)
    assert isinstance(model, FeatureClassifier) and model.metric_prefix == "fd_classifier"
    features = model.features(images[:100], batch_size=32)
    assert features.shape == (100, 32) and torch.isfinite(features).all()
    again = train_feature_classifier(images[:512], labels[:512], epochs=2, seed=0, width=8)
    torch.testing.assert_close(again.features(images[:100]), features)


def test_inception_loader_refuses_a_missing_file(tmp_path):
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth") as info:
        load_inception(missing)
    assert str(missing) in str(info.value)


def test_inception_loads_its_state_dict_and_gives_pool3_features(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "weights.pth"
    torch.save(fid_inception_v3().state_dict(), path)
    model = load_inception(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    extractor = InceptionFeatures(model, batch_size=2)
    assert extractor.metric_prefix == "fid"
    features = extractor.features(torch.rand(3, 1, 28, 28))
    assert features.shape == (3, 2048) and torch.isfinite(features).all()


def test_save_image_grid(tmp_path):
    path = tmp_path / "grids" / "samples.png"
    save_image_grid(path, torch.rand(6, 3, 8, 8) * 2 - 0.5, nrow=3)
    assert path.stat().st_size > 0
