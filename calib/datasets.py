"""Labelled image sets for calibration and evaluation, with each model's own preprocessing.

Every loader returns an :class:`ImageSet`: uint8 images (N, H, W, C) already at the model's input size, and int64
labels. Decoded sets are cached under ``$TSPTQ_CACHE`` (default ``~/.cache/tsptq``) because decoding 60,000 JPEGs
takes longer than the evaluation itself.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tsptq.atomic import atomic_write
from tsptq.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
BUNDLED_SAMPLE = Path(__file__).parent / "data" / "cifar10_test_sample.npz"

SHARED_DATA = Path(os.environ.get("TSPTQ_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CIFAR10_TARBALL = SHARED_DATA / "cifar10" / "cifar10-jpg.tar.gz"
IMAGENET_SAMPLE = SHARED_DATA / "imagenet-sample"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> Path:
    d = Path(os.environ.get("TSPTQ_CACHE", Path.home() / ".cache" / "tsptq"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    name: str

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def take(self, n: int | None, offset: int = 0) -> "ImageSet":
        """The first ``n`` images from ``offset`` (all when n is None)."""
        end = len(self) if n is None else offset + n
        if n is not None and end > len(self):
            raise DataError(f"{self.name}: asked for {n} images from offset {offset}, the set has {len(self)}")
        return ImageSet(self.images[offset:end], self.labels[offset:end], self.name)

    def balanced(self, n: int, seed: int = 0) -> "ImageSet":
        """``n`` images drawn evenly over classes, in a fixed (seeded) order."""
        rng = np.random.default_rng(seed)
        classes = np.unique(self.labels)
        per = -(-n // len(classes))
        idx = np.concatenate([rng.permutation(np.flatnonzero(self.labels == c))[:per] for c in classes])
        idx = np.sort(rng.permutation(idx)[:n])
        return ImageSet(self.images[idx], self.labels[idx], self.name)


def to_model_input(images: np.ndarray | torch.Tensor, cfg) -> torch.Tensor:
    """uint8 NHWC -> normalized float NCHW at the model's size (bicubic upscaling when smaller, e.g. CIFAR on DINOv2)."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != cfg.in_chans:
        raise DataError(f"model expects images with {cfg.in_chans} channel(s) (N, H, W, {cfg.in_chans}), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (cfg.img_size, cfg.img_size):
        if x.shape[-2] != x.shape[-1] or x.shape[-1] > cfg.img_size:
            raise DataError(f"images are {x.shape[-2]}x{x.shape[-1]}, model expects {cfg.img_size}x{cfg.img_size} "
                            "(smaller square images are upscaled; crop or resize larger ones first)")
        x = F.interpolate(x, size=(cfg.img_size, cfg.img_size), mode="bicubic", align_corners=False).clamp_(0, 1)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def iterate_batches(images: np.ndarray, cfg, batch_size: int):
    for i in range(0, len(images), batch_size):
        yield to_model_input(images[i : i + batch_size], cfg)


# --- CIFAR-10 (JPEG tarball) -------------------------------------------------------------------------------------

def load_cifar10(split: str = "test", tarball: Path | None = None) -> ImageSet:
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    tarball = Path(tarball or CIFAR10_TARBALL)
    cached = cache_dir() / f"cifar10-{split}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return ImageSet(z["images"], z["labels"], f"cifar10-{split}")
    if not tarball.exists():
        raise DataError(f"CIFAR-10 not found at {tarball} (set TSPTQ_DATA to the folder holding cifar10/)")
    from PIL import Image

    images, labels = [], []
    pattern = re.compile(rf"^{split}/([a-z]+)/(\d+)\.jpg$")
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                m = pattern.match(member.name)
                if not m:
                    continue
                img = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
                if img.shape != (32, 32, 3):
                    raise DataError(f"{member.name}: expected a 32x32 RGB image, got {img.shape}")
                images.append(img)
                labels.append(CIFAR10_CLASSES.index(m.group(1)))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot read CIFAR-10 tarball {tarball}: {e}") from e
    if not images:
        raise DataError(f"no {split} images in {tarball}")
    # The tarball's order is arbitrary: sort by (class, file) so indices mean the same on every machine.
    order = np.lexsort((np.arange(len(labels)), np.asarray(labels)))
    out = ImageSet(np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order], f"cifar10-{split}")
    _atomic_savez(cached, images=out.images, labels=out.labels)
    return out


def load_bundled_sample(split: str = "test") -> ImageSet:
    """CIFAR-10 images shipped inside the package, so the default job needs no ../shared: 500 test images
    (50 per class) and 64 training images for calibration."""
    if split not in ("train", "test"):
        raise DataError(f"bundled sample split must be 'train' or 'test', got {split!r}")
    if not BUNDLED_SAMPLE.exists():
        raise DataError(f"bundled sample missing: {BUNDLED_SAMPLE}")
    with np.load(BUNDLED_SAMPLE) as z:
        return ImageSet(z[f"{split}_images"], z[f"{split}_labels"], f"cifar10-sample-{split}")


def write_bundled_sample(test_n: int = 500, train_n: int = 64) -> None:
    """Cut the bundled sample from the full CIFAR-10 set (class-balanced, seeded)."""
    test, train = load_cifar10("test").balanced(test_n, seed=1), load_cifar10("train").balanced(train_n, seed=1)
    BUNDLED_SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(BUNDLED_SAMPLE, test_images=test.images, test_labels=test.labels,
                  train_images=train.images, train_labels=train.labels)


# --- Fashion-MNIST (IDX) -----------------------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def load_fashion_mnist(split: str = "test", root: Path | None = None) -> ImageSet:
    if split not in ("train", "test"):
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    root = Path(root or FASHION_DIR)
    prefix = "train" if split == "train" else "t10k"
    img_path, lbl_path = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not img_path.exists():
        raise DataError(f"Fashion-MNIST not found at {root} (apt-get install dataset-fashion-mnist)")
    images, labels = _read_idx(img_path), _read_idx(lbl_path)
    return ImageSet(images[..., None].copy(), labels.astype(np.int64), f"fashion-{split}")


# --- An image folder (ImageNet layout) ---------------------------------------------------------------------------

_SYNSET = re.compile(r"(n\d{8})")


def load_image_folder(root: Path, cfg, limit: int | None = None) -> ImageSet:
    """Images named or foldered by synset (``n01440764_tench.JPEG`` or ``n01440764/x.JPEG``).

    Class index = rank of the synset among the sorted synsets found (the ImageNet-1k index when all 1000 are
    present). Each image is resized (bicubic, shorter side to img_size / crop_pct) and center-cropped.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    found = [(p, _SYNSET.search(str(p.relative_to(root)))) for p in files]
    found = [(p, m.group(1)) for p, m in found if m]
    if not found:
        raise DataError(f"no images with a synset name (nXXXXXXXX) under {root}")
    synsets = sorted({s for _, s in found})
    if limit is not None:
        found = found[:limit]
    key = f"{root.resolve()}|{len(found)}|{cfg.img_size}|{cfg.crop_pct}".encode()
    cached = cache_dir() / f"folder-{hashlib.sha1(key).hexdigest()[:16]}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return ImageSet(z["images"], z["labels"], root.name)
    resize = int(cfg.img_size / cfg.crop_pct)
    images = []
    for path, _ in found:
        try:
            img = Image.open(path).convert("RGB")
        except OSError as e:
            raise DataError(f"cannot decode image {path}: {e}") from e
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - cfg.img_size) // 2, (h - cfg.img_size) // 2
        images.append(np.asarray(img.crop((left, top, left + cfg.img_size, top + cfg.img_size))))
    labels = np.asarray([synsets.index(s) for _, s in found], dtype=np.int64)
    out = ImageSet(np.stack(images), labels, root.name)
    _atomic_savez(cached, images=out.images, labels=out.labels)
    return out


def _atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


if __name__ == "__main__":  # python -m tsptq.calib.datasets: re-cut the bundled sample
    write_bundled_sample()
    print(f"wrote {BUNDLED_SAMPLE}")
