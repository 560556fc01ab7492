"""Labelled image sets for calibration and evaluation, with each model's own preprocessing.

Every loader returns an :class:`ImageSet`: uint8 images (N, H, W, C) already at the model's input size, and int64
labels. An image folder (ImageNet layout) can also stay on disk as a :class:`FolderImageSet` that decodes batch by
batch; both offer ``batches(cfg, batch_size, start, stop)``. Decoded sets are cached under ``$TSPTQ_CACHE`` (default ``~/.cache/tsptq``) because decoding 60,000 JPEGs
takes longer than the evaluation itself.
"""
from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import os
import re
import struct
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tsptq.atomic import atomic_write
from tsptq.errors import DataError
from tsptq.paths import REPO_ROOT, SAMPLE_DATA_DIR

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
BUNDLED_SAMPLE = SAMPLE_DATA_DIR / "cifar10_test_sample.npz"

SHARED_DATA = Path(os.environ.get("TSPTQ_DATA", REPO_ROOT.parent / "shared" / "data"))
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

    def batches(self, cfg, batch_size: int, start: int = 0, stop: int | None = None):
        """Model inputs (float NCHW, the model's preprocessing) of images [start, stop), ``batch_size`` at a time.
        Every evaluation set (this one, and the streamed image folders) offers this: the harness reads no other way."""
        return iterate_batches(self.images[start:stop], cfg, batch_size)

    def balanced(self, n: int, seed: int = 0) -> "ImageSet":
        """``n`` images drawn evenly over classes, in a fixed (seeded) order."""
        idx = _balanced_index(self.labels, n, seed)
        return ImageSet(self.images[idx], self.labels[idx], self.name)


def _balanced_index(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` images drawn evenly over classes, in a fixed (seeded) order (sorted)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = -(-n // len(classes))
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes])
    return np.sort(rng.permutation(idx)[:n])


def to_model_input(images: np.ndarray | torch.Tensor, cfg) -> torch.Tensor:
    """uint8 NHWC -> normalized float NCHW at the model's size (upscaled with the model's interpolation when smaller,
    e.g. CIFAR on DINOv2)."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != cfg.in_chans:
        raise DataError(f"model expects images with {cfg.in_chans} channel(s) (N, H, W, {cfg.in_chans}), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (cfg.img_size, cfg.img_size):
        if x.shape[-2] != x.shape[-1] or x.shape[-1] > cfg.img_size:
            raise DataError(f"images are {x.shape[-2]}x{x.shape[-1]}, model expects {cfg.img_size}x{cfg.img_size} "
                            "(smaller square images are upscaled; crop or resize larger ones first)")
        mode = _interpolation(cfg)
        x = F.interpolate(x, size=(cfg.img_size, cfg.img_size), mode=mode,
                          **({} if mode == "nearest" else {"align_corners": False})).clamp_(0, 1)
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
#
# Two layouts: images named or foldered by synset (``val/n01440764/x.JPEG``, ``n01440764_tench.JPEG``), or a flat
# folder (``ILSVRC2012_val_00000001.JPEG``, ...) with a ground-truth label file (``--labels``). A
# :class:`FolderImageSet` holds only the file names and labels: ``batches`` decodes batch by batch, ``load``
# decodes all (cached) into an :class:`ImageSet`.

_SYNSET = re.compile(r"(n\d{8})")
_SYNSET_FULL = re.compile(r"n\d{8}")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
IMAGENET1K_SYNSETS = SAMPLE_DATA_DIR / "imagenet1k_synsets.txt"
# Images over this many pixels are refused before decoding (decompression bombs): PIL's own default limit, or
# TSPTQ_MAX_IMAGE_PIXELS (read when an image is decoded), which raises or lowers it. Set to None, PIL's own check
# applies, its warning band (up to twice its limit) an error too.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
_FROM_ENV = object()
MAX_IMAGE_PIXELS: object = _FROM_ENV


def _max_image_pixels() -> int | None:
    if MAX_IMAGE_PIXELS is not _FROM_ENV:
        return MAX_IMAGE_PIXELS
    text = os.environ.get("TSPTQ_MAX_IMAGE_PIXELS")
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not text.strip().isascii() or not text.strip().isdigit() or int(text) < 1:
        raise DataError(f"TSPTQ_MAX_IMAGE_PIXELS must be a positive whole number of pixels, got {text!r}")
    return int(text)
_FOLDER_CACHE_VERSION = 2


@functools.lru_cache(maxsize=None)
def imagenet1k_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synsets, sorted: a synset's rank is its class index in ImageNet-1k models."""
    try:
        synsets = tuple(IMAGENET1K_SYNSETS.read_text().split())
    except OSError as e:
        raise DataError(f"the ImageNet-1k synset list is missing: {e}") from None
    if len(synsets) != 1000 or len(set(synsets)) != 1000 or list(synsets) != sorted(synsets):
        raise DataError(f"{IMAGENET1K_SYNSETS}: expected 1000 distinct sorted synsets, got {len(synsets)}")
    return synsets


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def _interpolation(cfg) -> str:
    mode = getattr(cfg, "interpolation", "bicubic")
    if mode not in INTERPOLATIONS:
        raise DataError(f"interpolation {mode!r} is not one of {', '.join(INTERPOLATIONS)}")
    return mode


def preprocess_image(img, cfg) -> np.ndarray:
    """A PIL image -> uint8 (img_size, img_size, 3), the model's own resize and crop: RGB, resize of the shorter side
    to int(img_size / crop_pct) with the model's interpolation (bicubic unless it says otherwise), center crop of
    img_size. Every image-folder path uses this."""
    from PIL import Image

    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    img = img.convert("RGB")
    resize = int(cfg.img_size / cfg.crop_pct)
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), filters[_interpolation(cfg)])
    w, h = img.size
    left, top = (w - cfg.img_size) // 2, (h - cfg.img_size) // 2
    return np.asarray(img.crop((left, top, left + cfg.img_size, top + cfg.img_size)))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def decode_image(path, cfg) -> np.ndarray:
    """Decode one image file and preprocess it (:func:`preprocess_image`). Oversized images (decompression bombs)
    and anything PIL cannot decode are a one-line :class:`DataError` naming the file."""
    from PIL import Image

    limit = _max_image_pixels()
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        if limit is not None:
            Image.MAX_IMAGE_PIXELS = None  # the check below replaces PIL's (which would cap a raised limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if limit is not None and w * h > limit:
                    raise DataError(f"{path}: {w}x{h} = {w * h:,} pixels is over the limit of {limit:,} "
                                    "(a decompression bomb?; set TSPTQ_MAX_IMAGE_PIXELS to allow it)")
                img.load()
                return preprocess_image(img, cfg)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: refused as a possible decompression bomb ({_one_line(e)})") from None
    except Exception as e:  # noqa: BLE001 -- any decoder failure (OSError, SyntaxError, ValueError, ...) is bad data
        raise DataError(f"cannot decode image {path}: {_one_line(e)}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def _label_key(name: str) -> str:
    """The key that matches a label-file entry with an image: the base name without an image suffix."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    return stem if dot and "." + suffix.lower() in IMAGE_SUFFIXES else base


def read_label_file(path) -> dict[str, str | int]:
    """Ground truth of a flat image folder: {file name without suffix: synset (str) or 0-based class index (int)}.

    Accepted: lines ``<file name> <synset or class index>`` (whitespace- or comma-separated; an optional header
    line; ``#`` comments), and Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of
    PredictionString is the synset). Refused: the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (one integer
    per line), whose ILSVRC2012_IDs are not the class index of ImageNet-1k models.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read label file {path}: {_one_line(e)}") from None
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1)]
    lines = [(i, ln) for i, ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"label file {path} is empty")
    out: dict[str, str | int] = {}

    def add(lineno: int, name: str, label: str | int) -> None:
        key = _label_key(name)
        if out.setdefault(key, label) != label:
            raise DataError(f"{path}:{lineno}: {name} is labelled both {out[key]} and {label}")

    header = [c.strip().lower() for c in lines[0][1].split(",")]
    if "imageid" in header and "predictionstring" in header:  # Kaggle's LOC_val_solution.csv
        col_id, col_pred = header.index("imageid"), header.index("predictionstring")
        for lineno, row in zip((i for i, _ in lines[1:]), csv.reader(ln for _, ln in lines[1:])):
            tokens = row[col_pred].split() if len(row) > max(col_id, col_pred) else []
            if not tokens or not _SYNSET_FULL.fullmatch(tokens[0]):
                raise DataError(f"{path}:{lineno}: expected 'ImageId,nXXXXXXXX ...' (a synset first in "
                                f"PredictionString), got {','.join(row)!r}")
            add(lineno, row[col_id].strip(), tokens[0])
        if not out:
            raise DataError(f"label file {path} has a header and no rows")
        return out

    rows = [(i, re.split(r"[\s,]+", ln)) for i, ln in lines]
    if all(len(t) == 1 and t[0].isdigit() for _, t in rows):
        raise DataError(
            f"{path}: one integer per line is the devkit's ILSVRC2012_validation_ground_truth.txt format: its "
            "ILSVRC2012_IDs (1-1000 in the devkit's meta.mat order) are not the class index of ImageNet-1k models "
            "(the rank of the synset in sorted order) and name no files; give lines '<file name> <synset>' "
            "(e.g. 'ILSVRC2012_val_00000001.JPEG n01751748') or '<file name> <0-based class index>', "
            "or Kaggle's LOC_val_solution.csv")

    def parse(label: str) -> str | int | None:
        return label if _SYNSET_FULL.fullmatch(label) else int(label) if label.isdigit() else None

    if len(rows[0][1]) == 2 and parse(rows[0][1][1]) is None:
        rows = rows[1:]  # a header line such as 'file,label'
    for lineno, tokens in rows:
        label = parse(tokens[1]) if len(tokens) == 2 else None
        if label is None:
            raise DataError(f"{path}:{lineno}: expected '<file name> <synset nXXXXXXXX or 0-based class index>', "
                            f"got {' '.join(tokens)!r}")
        add(lineno, tokens[0], label)
    if len({type(v) for v in out.values()}) > 1:
        raise DataError(f"{path}: mixes synsets and class indices; use one or the other")
    return out


def _scan_images(root: Path) -> list[str]:
    """Image files under ``root`` (relative POSIX names, in sorted-path order; hidden files and folders skipped)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts) and p.is_file())
    return [p.relative_to(root).as_posix() for p in files]


def _class_indices(names: list[str], raw: list, num_classes: int | None, where: str) -> np.ndarray:
    """Synsets or integers -> int64 class indices (the ImageNet-1k index for 1000-class models)."""
    if raw and isinstance(raw[0], int):
        labels = np.asarray(raw, dtype=np.int64)
        bad = np.flatnonzero(labels >= num_classes) if num_classes else np.array([], dtype=np.int64)
        if len(bad):
            raise DataError(f"{where}: {len(bad)} image(s) with a class index over the model's {num_classes} classes, "
                            f"first {names[bad[0]]} (class {labels[bad[0]]})")
        return labels
    if num_classes == 1000:
        index = {s: i for i, s in enumerate(imagenet1k_synsets())}
        unknown = [i for i, s in enumerate(raw) if s not in index]
        if unknown:
            raise DataError(f"{where}: {len(unknown)} image(s) with a synset that is not an ImageNet-1k class, "
                            f"first {names[unknown[0]]} ({raw[unknown[0]]})")
    else:
        index = {s: i for i, s in enumerate(sorted(set(raw)))}
    return np.asarray([index[s] for s in raw], dtype=np.int64)


class FolderImageSet:
    """An image folder as an evaluation set that decodes from disk batch by batch.

    Holds the root, the image names (relative, sorted) and their int64 labels, nothing decoded: cheap to pickle
    for worker processes. Offers what the evaluation harness reads of every set (``len()``, ``labels``, ``name``,
    ``take``, ``batches``) plus ``balanced`` and ``load`` (the materialized :class:`ImageSet`, for small sets).
    """

    def __init__(self, root, files, labels, name: str, cfg=None):
        self.root = str(root)
        self.files = tuple(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name
        self.cfg = cfg  # the model config load() preprocesses for (batches() takes its own)
        if len(self.files) != len(self.labels):
            raise DataError(f"{self.name}: {len(self.files)} images but {len(self.labels)} labels")

    @classmethod
    def open(cls, root, cfg, labels=None, *, missing_ok: bool = False) -> "FolderImageSet":
        """Scan ``root`` (no decoding). Labels: from ``labels`` (a label file, see :func:`read_label_file`) when
        given, else the synset in each image's path (``<synset>/x.JPEG`` or ``<synset>_x.JPEG``).

        Class index: for a 1000-class model (``cfg.num_classes == 1000``), the standard ImageNet-1k index (rank of
        the synset among the 1000 sorted ImageNet-1k synsets; any other synset is an error). For other models, the
        rank of the synset among the synsets found in this folder. Integer labels in a label file are used as is.
        An image without a label is an error; so is a label-file entry with no image, unless ``missing_ok``.
        """
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        files = _scan_images(root)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        num_classes = getattr(cfg, "num_classes", None)
        if labels is None:
            found = [_SYNSET.search(f) for f in files]
            unlabelled = [f for f, m in zip(files, found) if not m]
            if unlabelled:
                raise DataError(f"{root}: {len(unlabelled)} image(s) without a synset (nXXXXXXXX) in the path, first "
                                f"{unlabelled[0]}; for a flat folder of ILSVRC2012_val_*.JPEG give --labels FILE")
            raw = [m.group(1) for m in found]
        else:
            table = read_label_file(labels)
            keys = [_label_key(f) for f in files]
            if len(set(keys)) != len(keys):
                seen: set[str] = set()
                dup = next(f for f, k in zip(files, keys) if k in seen or seen.add(k))
                raise DataError(f"{root}: more than one image named {_label_key(dup)} (first {dup}): a label file "
                                "cannot tell them apart")
            unlabelled = [f for f, k in zip(files, keys) if k not in table]
            if unlabelled:
                raise DataError(f"{root}: {len(unlabelled)} image(s) not in the label file {labels}, first "
                                f"{unlabelled[0]}")
            if not missing_ok:
                check_listed_present(labels, table, keys, root)
            raw = [table[k] for k in keys]
        return cls(root, files, _class_indices(files, raw, num_classes, str(root)), root.name, cfg)

    @property
    def paths(self) -> list[Path]:
        return [Path(self.root) / f for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FolderImageSet({self.root!r}, {len(self)} images)"

    def _subset(self, idx) -> "FolderImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return FolderImageSet(self.root, [self.files[i] for i in idx], self.labels[idx], self.name, self.cfg)

    def take(self, n: int | None, offset: int = 0) -> "FolderImageSet":
        """The first ``n`` images from ``offset`` (all when n is None), as :meth:`ImageSet.take`."""
        end = len(self) if n is None else offset + n
        if n is not None and end > len(self):
            raise DataError(f"{self.name}: asked for {n} images from offset {offset}, the set has {len(self)}")
        return FolderImageSet(self.root, self.files[offset:end], self.labels[offset:end], self.name, self.cfg)

    def balanced(self, n: int, seed: int = 0) -> "FolderImageSet":
        """``n`` images drawn evenly over classes, the same ones :meth:`ImageSet.balanced` draws."""
        return self._subset(_balanced_index(self.labels, n, seed))

    def batches(self, cfg, batch_size: int, start: int = 0, stop: int | None = None):
        """Model inputs (float NCHW) of images [start, stop), ``batch_size`` at a time, decoded from disk as they
        are needed: equal to ``self.load().batches(...)``."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        lo, hi, _ = slice(start, stop).indices(len(self))
        for i in range(lo, hi, batch_size):
            names = self.files[i : min(i + batch_size, hi)]
            yield to_model_input(np.stack([decode_image(Path(self.root) / f, cfg) for f in names]), cfg)

    def cache_key(self, cfg) -> str:
        """The decoded set's cache key: the files' relative names, sizes and mtimes (ns), the labels and the
        preprocessing (size, crop), so a folder whose images changed misses the cache."""
        h = hashlib.sha1(f"v{_FOLDER_CACHE_VERSION}|{cfg.img_size}|{cfg.crop_pct!r}|{_interpolation(cfg)}|".encode())
        for f in self.files:
            try:
                st = os.stat(Path(self.root) / f)
            except OSError as e:
                raise DataError(f"cannot read image {Path(self.root) / f}: {_one_line(e)}") from None
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(self.labels.tobytes())
        return h.hexdigest()[:20]

    def load(self, cfg=None, cache: bool = True) -> ImageSet:
        """Decode every image into an :class:`ImageSet` (uint8 at the model's size), cached under ``$TSPTQ_CACHE``
        by contents. For small sets (calibration): 50,000 images at 224 px take 7.5 GB."""
        cfg = cfg or self.cfg
        if cfg is None:
            raise DataError(f"{self.name}: no model config to preprocess the images for")
        if not len(self):
            raise DataError(f"{self.name}: no images to load")
        cached = cache_dir() / f"folder-{self.cache_key(cfg)}.npz" if cache else None
        if cached is not None and cached.exists():
            try:
                with np.load(cached) as z:
                    images = z["images"]
                if images.shape == (len(self), cfg.img_size, cfg.img_size, 3):
                    return ImageSet(images, self.labels.copy(), self.name)
            except (OSError, ValueError, KeyError, EOFError):
                pass  # an unreadable cache entry: decode again and overwrite it
        images = np.stack([decode_image(p, cfg) for p in self.paths])
        out = ImageSet(images, self.labels.copy(), self.name)
        if cached is not None:
            _atomic_savez(cached, images=out.images, labels=out.labels)
        return out


def check_listed_present(labels, table, keys, where) -> None:
    """Every image named in the label file ``labels`` (parsed: ``table``) is among ``keys`` (label keys of the
    images found), else a DataError naming the first missing one and the count."""
    present = set(keys)
    missing = [k for k in table if k not in present]
    if missing:
        raise DataError(f"{labels}: {len(missing)} listed image(s) not found under {where}, first {missing[0]}")


def open_image_folders(root, cfg, labels=None, calib_root=None) -> tuple["FolderImageSet", "FolderImageSet | None"]:
    """The evaluation folder and the optional calibration folder, labelled from one label file (whose entries
    may be in either folder; an entry in neither is an error)."""
    if calib_root is None:
        return FolderImageSet.open(root, cfg, labels), None
    if Path(calib_root).resolve() == Path(root).resolve():
        raise DataError(f"the calibration folder {calib_root} is the evaluation folder: give one apart from it")
    test = FolderImageSet.open(root, cfg, labels, missing_ok=True)
    try:  # a calibration folder in class folders (ImageNet's train/) needs no label file, even when val does
        calib = FolderImageSet.open(calib_root, cfg)
    except DataError:
        if labels is None:
            raise
        calib = FolderImageSet.open(calib_root, cfg, labels, missing_ok=True)
    if labels is not None:
        keys = [_label_key(f) for f in test.files + calib.files]
        check_listed_present(labels, read_label_file(labels), keys, f"{root} or {calib_root}")
    return test, calib


def shared_images(a: FolderImageSet, b: FolderImageSet) -> list[Path]:
    """The images of ``a`` (a small set: resolved one by one) that are also images of ``b``."""
    b_root, b_files = Path(b.root).resolve(), set(b.files)
    out = []
    for p in a.paths:
        rp = p.resolve()
        if rp.is_relative_to(b_root) and rp.relative_to(b_root).as_posix() in b_files:
            out.append(p)
    return out


def load_image_folder(root: Path, cfg, limit: int | None = None, labels=None) -> ImageSet:
    """The first ``limit`` images (all when None) of an image folder, decoded (see :class:`FolderImageSet`:
    layouts, class index, cache)."""
    images = FolderImageSet.open(root, cfg, labels)
    return (images if limit is None else images.take(min(limit, len(images)))).load()


def _atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


if __name__ == "__main__":  # python -m tsptq.data.datasets: re-cut the bundled sample
    write_bundled_sample()
    print(f"wrote {BUNDLED_SAMPLE}")
