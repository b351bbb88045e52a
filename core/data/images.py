"""The image benchmarks: MNIST, Fashion-MNIST and CIFAR-10 from a local folder, and scikit-learn's digits for tests.

Images are ToTensor's values only (uint8 / 255, in [0, 1]), with no augmentation or normalisation. The torchvision
datasets are read from `data_dir` in torchvision's own layout and are downloaded only when asked to; the whole split
is converted to one tensor at once, and `ImageBatches` serves it from the device the model runs on.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch
import torchvision

from core.config import IMAGE_DATASETS

__all__ = ["IMAGE_DATASETS", "DatasetNotFound", "ImageBatches", "ensure_dataset", "image_shape", "load_images"]

_SHAPES = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28), "cifar10": (3, 32, 32), "digits": (1, 8, 8)}

_TORCHVISION_CLASSES = {
    "mnist": torchvision.datasets.MNIST,
    "fmnist": torchvision.datasets.FashionMNIST,
    "cifar10": torchvision.datasets.CIFAR10,
}
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")

# scikit-learn's digits has no official split; its 1,797 images are not ordered by class, so a fixed cut is fair.
DIGITS_TRAIN_SIZE = 1_500


def _check_name(name: str) -> None:
    if name not in _SHAPES:
        raise ValueError(f"unknown image dataset {name!r} (expected: {', '.join(IMAGE_DATASETS)})")


def image_shape(name: str) -> tuple[int, int, int]:
    """(channels, height, width) of one image of dataset `name`."""
    _check_name(name)
    return _SHAPES[name]


def dataset_folder(name: str, data_dir: str | os.PathLike = "data") -> str:
    """Where torchvision reads `name`: data_dir/MNIST/raw, data_dir/FashionMNIST/raw or data_dir/cifar-10-batches-py."""
    if name == "cifar10":
        return os.path.join(data_dir, torchvision.datasets.CIFAR10.base_folder)
    return os.path.join(data_dir, _TORCHVISION_CLASSES[name].__name__, "raw")


class DatasetNotFound(FileNotFoundError):
    """The files of an image dataset are not in the data folder; the message says which files go where."""

    def __init__(self, dataset: str, folder: str, files: tuple[str, ...], detail: str = ""):
        self.dataset = dataset
        self.folder = folder
        self.files = files
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"dataset {dataset!r} not found in {folder}{suffix}: expected the files {', '.join(files)} there "
            f"(torchvision's layout). Put them there, point data_dir (--data-dir) at another folder that holds "
            f"them, or pass --download to fetch them."
        )


def _dataset_not_found(name: str, data_dir: str | os.PathLike, detail: str = "") -> DatasetNotFound:
    if name == "cifar10":
        files = _CIFAR10_FILES
        detail = detail or "the extracted cifar-10-python.tar.gz, checked against torchvision's MD5 sums"
    else:
        files = tuple(f"{f}(.gz)" for f in _MNIST_FILES)
    return DatasetNotFound(name, dataset_folder(name, data_dir), files, detail)


def _gunzip_missing(raw_folder: str) -> None:
    """Extract MNIST-format `X.gz` files whose `X` is missing: torchvision only reads the uncompressed files.

    Written to a temporary file and renamed, so that trials starting together never read a half-written file.
    """
    for name in _MNIST_FILES:
        target = os.path.join(raw_folder, name)
        source = target + ".gz"
        if os.path.isfile(target) or not os.path.isfile(source):
            continue
        fd, tmp = tempfile.mkstemp(dir=raw_folder, prefix=name, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _load_digits(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits (values 0..16, divided by 16); train = the first 1,500 images, test = the other 297."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).div(16.0).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    part = slice(None, DIGITS_TRAIN_SIZE) if train else slice(DIGITS_TRAIN_SIZE, None)
    return images[part].contiguous(), labels[part].contiguous()


def load_images(
    name: str, data_dir: str | os.PathLike = "data", train: bool = True, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an image dataset as (images float32 (N, C, H, W) in [0, 1], labels int64 (N,)), on the CPU.

    mnist, fmnist, cifar10 come through torchvision's dataset classes from `data_dir` (downloaded there only when
    `download`); missing files raise DatasetNotFound. digits is scikit-learn's bundled set (see `_load_digits`).
    """
    _check_name(name)
    if name == "digits":
        return _load_digits(train)
    dataset = _open_torchvision(name, os.fspath(data_dir), train, download)
    if name == "cifar10":
        data = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # (N, H, W, C) uint8 -> (N, C, H, W)
    else:
        data = dataset.data.unsqueeze(1)
    images = data.to(torch.float32).div(255.0).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return images, labels


def ensure_dataset(name: str, data_dir: str | os.PathLike = "data", download: bool = False) -> None:
    """Check that both splits of `name` can be read from `data_dir` (fetching them first when `download`), else
    raise DatasetNotFound. A study calls this once on its driver: a missing folder fails before any trial starts,
    and trials never race each other to download."""
    _check_name(name)
    if name != "digits":
        for train in (True, False):
            _open_torchvision(name, os.fspath(data_dir), train, download)


def _open_torchvision(name: str, root: str, train: bool, download: bool):
    """torchvision's dataset object (its uint8 data in memory), or DatasetNotFound."""
    if name != "cifar10" and os.path.isdir(dataset_folder(name, root)):
        _gunzip_missing(dataset_folder(name, root))
    try:
        return _TORCHVISION_CLASSES[name](root, train=train, download=download)
    except RuntimeError as err:
        if "not found" not in str(err):
            raise
        raise _dataset_not_found(name, root) from err


class ImageBatches:
    """A whole image set held on one device, served as mini-batches like a DataLoader(shuffle, drop_last=False).

    Each pass (`for x in batches`) is one epoch: a fresh permutation drawn from `generator` (torch's global generator
    when None; a CPU generator keeps the order identical on every device), cut into `len(batches)` batches, the last
    one smaller when the set does not divide evenly. With shuffle=False the batches follow the stored order.
    `memory_format=torch.channels_last` stores the set (and so every batch) in that layout.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        shuffle: bool = True,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images = images.to(device=device, memory_format=memory_format)
        self.batch_size = batch_size
        self.generator = generator
        self.shuffle = shuffle

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        return math.ceil(self.num_images / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n, size = self.num_images, self.batch_size
        if not self.shuffle:
            for start in range(0, n, size):
                yield self.images[start : start + size]
            return
        generator_device = self.generator.device if self.generator is not None else "cpu"
        order = torch.randperm(n, generator=self.generator, device=generator_device).to(self.images.device)
        for start in range(0, n, size):
            yield self.images[order[start : start + size]]
