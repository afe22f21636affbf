"""Datasets held whole as uint8 tensors, and two-view augmentation done batch-wise on the device.

Supported: `cifar100` (default), `cifar10`, `fashion-mnist`. CIFAR is read from its own pickle
files (torchvision's downloader fetches them when missing and the network allows);
Fashion-MNIST from its four idx files, gzipped or not.
"""
from __future__ import annotations

import gzip
import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataError(RuntimeError):
    """The dataset is missing or unreadable; the message says which file to place where."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int


DATASETS = {
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50_000),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50_000),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), 60_000),
}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR_LAYOUT = {
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta", "fine_labels",
                 "fine_label_names", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", "labels", "label_names", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
}


@dataclass
class Split:
    """One split of a dataset: images (N, C, H, W) uint8, labels (N,) int64, and each image's
    index in the full split (N,) int64, which names its memory-bank slot."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    class_names: list[str]
    source: str = ""  # the folder it was read from

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device), self.indices.to(device), self.class_names,
                     self.source)


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's pickles hold dicts of lists, strings and numpy arrays; refuse anything else, so a
    tampered data file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "bytes")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(obj, dict):
        raise DataError(f"cannot read {path}: expected a dict, found {type(obj).__name__}")
    return obj


def _download_cifar(name: str, root: Path) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR100 if name == "cifar100" else torchvision.datasets.CIFAR10
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        cls(str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(old_timeout)


def _load_cifar(name: str, root: Path, split: str, download: bool) -> Split:
    folder, files, meta_file, label_key, names_key, url = CIFAR_LAYOUT[name]
    base = root / folder
    needed = [base / f for f in files["train"] + files["test"] + [meta_file]]
    if not all(p.is_file() for p in needed):
        if download:
            try:
                _download_cifar(name, root)
            except Exception as err:  # offline, refused, or a bad archive: all end in the same advice
                reason = f" (download failed: {type(err).__name__}: {err})"
            else:
                reason = ""
        else:
            reason = ""
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise DataError(f"{name} not found: place the files of {url} (extracted: {folder}/) under "
                            f"{root}/, missing {', '.join(missing)}{reason}")
    images, labels = [], []
    for f in files[split]:
        batch = _read_pickle(base / f)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32))
            labels.extend(_integer_labels(batch[label_key], base / f))
        except (KeyError, ValueError) as err:
            raise DataError(f"cannot read {base / f}: unexpected content ({err})") from None
    meta = _read_pickle(base / meta_file)
    class_names = [str(c) for c in meta.get(names_key, [])] or [str(i) for i in range(DATASETS[name].num_classes)]
    images = torch.from_numpy(np.concatenate(images))
    labels = torch.tensor(labels, dtype=torch.long)
    if len(images) != len(labels):
        raise DataError(f"{base}: {len(images)} images but {len(labels)} labels")
    return Split(images, labels, torch.arange(len(labels)), class_names, str(base))


def _integer_labels(values, path: Path) -> list[int]:
    """Class labels must be integers: a None, a string or a fraction is named, never cast."""
    try:
        values = list(values)
    except TypeError:
        raise DataError(f"{path}: the labels are not a list (got {type(values).__name__})") from None
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise DataError(f"{path}: label {i} is {v!r} ({type(v).__name__}); labels must be integers")
    return [int(v) for v in values]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        magic = int.from_bytes(raw[:4], "big")
        if magic >> 8 != 0x08:  # 0x08: unsigned byte data
            raise ValueError(f"bad magic number {magic:#x}")
        ndim = magic & 0xFF
        shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def find_fashion_mnist(root: Path) -> dict[str, Path] | None:
    """The four idx files in `root` (or Debian's dataset folder), plain or .gz; None if there are
    none. A folder of `root` holding some of them but not all is a DataError naming the missing
    ones: the study never quietly reads another folder than the one it was given."""
    folders = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    if not os.environ.get("LWSUPCRD_NO_DEBIAN_DATA"):  # tests of the missing-data message set this
        folders.append(DEBIAN_FASHION_DIR)
    for folder in folders:
        found = {}
        for stem in sum(FASHION_FILES.values(), ()):
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == 4:
            return found
        if found and folder != DEBIAN_FASHION_DIR:
            missing = [f"{stem}[.gz]" for stem in sum(FASHION_FILES.values(), ()) if stem not in found]
            raise DataError(f"fashion-mnist in {folder} is incomplete: missing {', '.join(missing)}")
    return None


def _load_fashion(root: Path, split: str, download: bool) -> Split:
    files = find_fashion_mnist(root)
    reason = ""
    if files is None and download:
        try:
            import torchvision

            old_timeout = socket.getdefaulttimeout()
            socket.setdefaulttimeout(20)
            try:
                torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
            finally:
                socket.setdefaulttimeout(old_timeout)
        except Exception as err:
            reason = f" (download failed: {type(err).__name__}: {err})"
        files = find_fashion_mnist(root)
    if files is None:
        names = ", ".join(f"{s}[.gz]" for s in sum(FASHION_FILES.values(), ()))
        raise DataError(f"fashion-mnist not found: place {names} in {root}/ "
                        f"(Debian: apt-get install dataset-fashion-mnist){reason}")
    image_file, label_file = FASHION_FILES[split]
    images, labels = _read_idx(files[image_file]), _read_idx(files[label_file])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{files[image_file]} and {files[label_file]} do not form an image/label pair")
    images = torch.from_numpy(images.copy())[:, None]  # (N, 1, 28, 28)
    return Split(images, torch.from_numpy(labels.astype(np.int64)), torch.arange(len(labels)), FASHION_CLASSES,
                 str(files[image_file].parent))


def load_split(name: str, data_dir: str | Path, split: str, download: bool = True) -> Split:
    """Load `split` ("train" or "test") of dataset `name` from `data_dir`, whole, as uint8."""
    dataset_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data_dir)
    loaded = _load_fashion(root, split, download) if name == "fashion-mnist" else _load_cifar(name, root, split, download)
    labels, classes = loaded.labels, DATASETS[name].num_classes
    bad = (labels < 0) | (labels >= classes)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0])
        raise DataError(f"{name} {split} split in {loaded.source}: label {int(labels[first])} of image {first} is "
                        f"outside [0, {classes - 1}] ({int(bad.sum())} such labels)")
    return loaded


def balanced_subset(split: Split, n: int, seed: int) -> Split:
    """A seeded subset of n images with (as near as possible) equal counts per class."""
    if n >= len(split):
        return split
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(split.labels)
    per_class = [torch.nonzero(split.labels == c).flatten() for c in classes]
    base, extra = divmod(n, len(classes))
    order = torch.randperm(len(classes), generator=gen)
    chosen = []
    for rank, c in enumerate(order.tolist()):
        members = per_class[c][torch.randperm(len(per_class[c]), generator=gen)]
        chosen.append(members[: base + (1 if rank < extra else 0)])
    idx = torch.sort(torch.cat(chosen)).values
    return Split(split.images[idx], split.labels[idx], split.indices[idx], split.class_names, split.source)


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 standardised with the dataset's channel mean and std."""
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def crop_flip_params(n: int, generator: torch.Generator, device: torch.device | str, pad: int = 4):
    """Random offsets in [0, 2 pad] and flips for n images: `(off_y, off_x, flip)`, each (n,)."""
    off_y = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    off_x = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return off_y, off_x, flip


def crop_flip(images: torch.Tensor, params, info: DatasetInfo, pad: int = 4, jitter=None) -> torch.Tensor:
    """Apply crop-with-zero-padding and flip parameters to a uint8 batch, all images at once, then
    the colour jitter `jitter` (`color_jitter_params`) if given; returns normalised float32 (N, C, H, W).

    Zero padding is applied to the raw image (as torchvision's RandomCrop(padding=4) before
    Normalize), so padded pixels are black after normalisation too."""
    off_y, off_x, flip = params
    n, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = off_y[:, None] + torch.arange(h, device=device)  # (N, H)
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + off_x[:, None]  # (N, W)
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, C, H, W)
    if jitter is None:
        return normalize(out, info)
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
    return (color_jitter(out.float() / 255, jitter) - mean) / std


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def color_jitter_params(n: int, strength: float, generator: torch.Generator, device: torch.device | str):
    """torchvision's ColorJitter(brightness=s, contrast=s, saturation=s) drawn for n images: a factor
    in [max(0, 1 - s), 1 + s] for each, and each image's random order of the three (n, 3)."""
    low, high = max(0.0, 1 - strength), 1 + strength
    factors = low + (high - low) * torch.rand(n, 3, generator=generator, device=device)
    order = torch.rand(n, 3, generator=generator, device=device).argsort(dim=1)
    return factors, order


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, params) -> torch.Tensor:
    """Brightness, contrast and saturation in each image's own order, as torchvision applies them to
    images in [0, 1]: brightness x b; contrast (x - mean gray) c + mean gray; saturation (x - gray) s
    + gray (nothing on one channel); each clamped to [0, 1]. torchvision works on the uint8 PIL
    image and rounds after each; this keeps floats."""
    factors, order = params
    for k in range(3):
        f = factors.gather(1, order[:, k:k + 1]).view(-1, 1, 1, 1)
        op = order[:, k].view(-1, 1, 1, 1)
        brightness = x * f
        contrast = (x - _gray(x).mean(dim=(1, 2, 3), keepdim=True)) * f + _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        saturation = (x - _gray(x)) * f + _gray(x) if x.shape[1] > 1 else x
        x = torch.where(op == 0, brightness, torch.where(op == 1, contrast, saturation)).clamp(0, 1)
    return x


def augment(images: torch.Tensor, info: DatasetInfo, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding and a random horizontal flip, for a whole batch
    at once on the batch's device; returns normalised float32 (N, C, H, W)."""
    return crop_flip(images, crop_flip_params(len(images), generator, images.device, pad), info, pad)


def write_cifar_like(root: Path, name: str = "cifar100", train_per_class: int = 5, test_per_class: int = 2,
                     num_classes: int | None = None, seed: int = 0) -> Path:
    """Write a small synthetic dataset in CIFAR's own on-disk pickle layout (for tests, smoke runs
    and benchmarks without a download). Each class is a coloured blob pattern, learnable but not
    trivially so."""
    folder, files, meta_file, label_key, names_key, _ = CIFAR_LAYOUT[name]
    num_classes = num_classes or DATASETS[name].num_classes
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(num_classes, 3, 8, 8)).astype(np.float32)

    def make(per_class):
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        base = prototypes[labels].repeat(4, axis=2).repeat(4, axis=3)
        noise = rng.normal(0, 40, size=base.shape)
        return np.clip(base + noise, 0, 255).astype(np.uint8).reshape(len(labels), -1), labels.tolist()

    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make(train_per_class)
    chunks = np.array_split(np.arange(len(train_y)), len(files["train"]))
    for f, idx in zip(files["train"], chunks):
        with open(out / f, "wb") as fh:
            pickle.dump({"data": train_x[idx], label_key: [train_y[i] for i in idx]}, fh)
    test_x, test_y = make(test_per_class)
    with open(out / files["test"][0], "wb") as fh:
        pickle.dump({"data": test_x, label_key: test_y}, fh)
    with open(out / meta_file, "wb") as fh:
        pickle.dump({names_key: [f"class_{i}" for i in range(num_classes)]}, fh)
    return Path(root)
