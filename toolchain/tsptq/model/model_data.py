"""Which images a command runs on: the calibration and evaluation sets for a model (its own data set by default) and
the user's data choice."""
from __future__ import annotations

from dataclasses import dataclass

from tsptq.errors import DataError

DATA_CHOICES = ("auto", "bundled", "cifar10", "fashion", "imagenet")


@dataclass(frozen=True)
class EvalData:
    """The evaluation images of a finished file (verify, profile): the data recorded in the file's metadata unless
    these say otherwise. ``images``: how many (None: all of the set)."""
    data: str | None = None
    folder: str | None = None
    labels: str | None = None
    images: int | None = None


def resolve_data(model_name: str | None, cfg, data: str, calib_n: int, eval_n: int | None, folder: str | None = None,
                 *, labels: str | None = None, calib_folder: str | None = None, stream: bool = False,
                 eval_only: bool = False):
    """(calibration set, evaluation set, whether the labels match the model's classes).

    ``auto``: the reference model's own data set (``ReferenceModel.data``: CIFAR-10 for cifar10-vit and dinov2-s14,
    Fashion-MNIST for fashion-vit), falling back to the bundled CIFAR-10 sample when ../shared is absent. Calibration images come
    from the training split, evaluation images from the test split (class-balanced, seeded).

    ``imagenet``: the image folder ``folder`` (default ../shared/data/imagenet-sample): class folders
    ``<synset>/*.JPEG``, synset-named files, or a flat folder with the label file ``labels`` (see
    ``datasets.FolderImageSet``). Calibration: ``calib_n`` images of ``calib_folder`` (class-balanced, seeded)
    when given, else the first ``calib_n`` images of ``folder``, kept out of the evaluation.

    ``eval_only``: the evaluation set alone (the calibration set is None): a calibration folder is not even opened
    (verify and boards evaluate a file whose calibration is done; its folder may not be on this machine).

    The calibration set is always an ``ImageSet`` (decoded). The evaluation set is one too unless ``stream``: then
    an image folder stays a ``datasets.FolderImageSet`` that decodes batch by batch (the other data sets are
    small and stay ``ImageSet``); both offer ``len()``, ``.labels``, ``.name``, ``.take`` and ``.batches``.
    """
    from tsptq.data import datasets  # torch: only when images are needed (`tsptq --help` and inspect stay light)
    from tsptq.model.zoo import REFERENCE_MODELS

    if data == "auto":
        # A reference model's own data set, unless a checkpoint replaced it (callers pass --model's default then too).
        spec = REFERENCE_MODELS.get(model_name)
        own = spec.data if spec is not None and spec.config == cfg else None
        if own == "fashion":
            data = "fashion"
        elif own == "cifar10" or (cfg.num_classes == 10 and cfg.in_chans == 3):
            data = "cifar10" if datasets.CIFAR10_TARBALL.exists() else "bundled"
        else:
            data = "imagenet"
    if data != "imagenet" and (labels or calib_folder):
        raise DataError(f"--labels and --calib-folder are for --data imagenet (image folders), not {data}")
    if data == "imagenet":
        test, calib = datasets.open_image_folders(folder or datasets.IMAGENET_SAMPLE, cfg, labels,
                                                  None if eval_only else calib_folder)
        if eval_only and calib_folder:  # the calibration came from elsewhere: the whole folder is evaluation data
            test = test if eval_n is None else test.take(min(eval_n, len(test)))
            return None, (test if stream else test.load()), cfg.num_classes == 1000
        if calib is None:  # an image folder has no training split: calibrate on images kept out of the evaluation
            if len(test) <= calib_n:
                raise DataError(f"{test.name}: {len(test)} images, need more than the {calib_n} calibration images")
            calib, test = test.take(calib_n), test.take(len(test) - calib_n, offset=calib_n)
        else:
            if len(calib) < calib_n:
                raise DataError(f"{calib.root}: {len(calib)} images, fewer than the {calib_n} calibration images")
            calib = calib.balanced(calib_n, seed=0)
            shared = datasets.shared_images(calib, test)
            if shared:
                raise DataError(f"{len(shared)} calibration image(s) are also in the evaluation set, first {shared[0]}: "
                                "give a --calib-folder apart from --folder")
        test = test if eval_n is None else test.take(min(eval_n, len(test)))
        return (None if eval_only else calib.load()), (test if stream else test.load()), cfg.num_classes == 1000
    load = {"bundled": datasets.load_bundled_sample, "cifar10": datasets.load_cifar10,
            "fashion": datasets.load_fashion_mnist}[data]
    calib, test = load("train"), load("test")
    calib = calib.balanced(calib_n, seed=0)
    test = test if eval_n is None or eval_n >= len(test) else test.balanced(eval_n, seed=0)
    return calib, test, True
