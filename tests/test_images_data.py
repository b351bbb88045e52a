"""Image data: torchvision's on-disk layouts read from a local folder, digits, the missing-data error, batching."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision

from core.data.images import IMAGE_DATASETS, DatasetNotFound, ImageBatches, ensure_dataset, image_shape, load_images


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    """An MNIST idx file: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 sizes, then the bytes."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist(root, folder: str, rng: np.random.Generator, n: int = 10) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, compress in (("train", True), ("t10k", False)):
        arrays[f"{split}-images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels"] = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", arrays[f"{split}-images"], compress)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", arrays[f"{split}-labels"], compress)
    return arrays


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fmnist", "FashionMNIST")])
def test_mnist_layout_loads_gzip_and_raw_files(tmp_path, name, folder):
    arrays = _write_mnist(tmp_path, folder, np.random.default_rng(0))
    for train, split in ((True, "train"), (False, "t10k")):
        images, labels = load_images(name, tmp_path, train=train)
        assert images.shape == (10, *image_shape(name)) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
        torch.testing.assert_close(images[:, 0], torch.from_numpy(arrays[f"{split}-images"]).float() / 255)
        assert labels.tolist() == arrays[f"{split}-labels"].tolist()


def test_cifar10_pickle_batches_load(tmp_path, monkeypatch):
    # Our tiny batches cannot match torchvision's MD5 sums of the real files; everything else is the real path.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), "labels": [1, 5, 9]}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)

    images, labels = load_images("cifar10", tmp_path, train=True)
    assert images.shape == (15, 3, 32, 32) and labels.shape == (15,) and labels.dtype == torch.int64
    # A CIFAR row is 1,024 red, then green, then blue values, each image row by row.
    expected = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)]).reshape(15, 3, 32, 32)
    torch.testing.assert_close(images, torch.from_numpy(expected).float() / 255)
    test_images, test_labels = load_images("cifar10", tmp_path, train=False)
    assert test_images.shape == (3, 3, 32, 32) and test_labels.tolist() == [1, 5, 9]


def test_digits_shapes_and_range():
    train_images, train_labels = load_images("digits", train=True)
    test_images, test_labels = load_images("digits", train=False)
    assert train_images.shape == (1500, 1, 8, 8) and test_images.shape == (297, 1, 8, 8)
    assert train_labels.shape == (1500,) and test_labels.shape == (297,)
    assert train_images.min() == 0 and train_images.max() == 1
    assert set(train_labels.tolist()) == set(range(10))


@pytest.mark.parametrize(("name", "folder", "file"), [
    ("mnist", os.path.join("MNIST", "raw"), "train-images-idx3-ubyte"),
    ("fmnist", os.path.join("FashionMNIST", "raw"), "t10k-labels-idx1-ubyte"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
])  # fmt: skip
def test_missing_dataset_names_folder_and_files(tmp_path, name, folder, file):
    with pytest.raises(DatasetNotFound) as info:
        load_images(name, tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / folder) in message and file in message and "--download" in message
    assert isinstance(info.value, FileNotFoundError)


def test_ensure_dataset_checks_both_splits_before_a_study_starts(tmp_path):
    _write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    ensure_dataset("mnist", tmp_path)
    ensure_dataset("digits", tmp_path / "nowhere")  # bundled with scikit-learn: no folder needed
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()  # the test split is incomplete
    with pytest.raises(DatasetNotFound, match=r"dataset 'mnist' not found in .*MNIST/raw"):
        ensure_dataset("mnist", tmp_path)


def test_every_image_dataset_has_a_shape():
    assert {name: len(image_shape(name)) for name in IMAGE_DATASETS} == dict.fromkeys(IMAGE_DATASETS, 3)
    with pytest.raises(ValueError, match="cifar100"):
        image_shape("cifar100")


def test_image_batches_cover_every_image_once_per_epoch():
    images = torch.arange(23, dtype=torch.float32).view(23, 1, 1, 1)
    batches = ImageBatches(images, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 5
    epochs = []
    for _ in range(2):
        sizes, seen = [], []
        for x in batches:
            sizes.append(x.shape[0])
            seen += x.flatten().long().tolist()
        assert sizes == [5, 5, 5, 5, 3] and sorted(seen) == list(range(23))
        epochs.append(seen)
    assert epochs[0] != epochs[1] and epochs[0] != list(range(23))
    again = ImageBatches(images, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert torch.cat(list(again)).flatten().long().tolist() == epochs[0]


def test_image_batches_in_order_and_channels_last():
    images = torch.rand(7, 3, 4, 4)
    ordered = ImageBatches(images, batch_size=4, shuffle=False, memory_format=torch.channels_last)
    batches = list(ordered)
    torch.testing.assert_close(torch.cat(batches), images)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in batches)
    shuffled = ImageBatches(images, batch_size=4, generator=torch.Generator(), memory_format=torch.channels_last)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in shuffled)
