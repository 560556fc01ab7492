"""The model, calibration and data options that several commands share, and what they become for the library."""
from __future__ import annotations

from tsptq.model.model_data import DATA_CHOICES, EvalData


def add_model_args(p, bits_help: str = "weight and activation bits (the file holds 8-bit activations)") -> None:
    """The model, calibration and data options that eval and export share."""
    p.add_argument("--model", default="cifar10-vit", help="reference model or timm config name (see `tsptq models`)")
    p.add_argument("--checkpoint", help="a checkpoint file (.pth/.pt/.bin/.safetensors) or folder (save_pretrained's, "
                                        "a hub snapshot): timm ViT/DeiT, or Hugging Face ViT/DeiT/DINOv2 layouts; "
                                        "timm/Microsoft Swin (no faithful engine and no --npu variant yet) "
                                        "(overrides --model)")
    p.add_argument("--onnx", dest="checkpoint", metavar="MODEL.onnx",
                   help="an ONNX export of a pre-norm ViT (timm's or transformers' torch.onnx.export, opset >= 17), "
                        "mapped by its data flow and checked against onnxruntime (same as --checkpoint MODEL.onnx)")
    p.add_argument("--heads", type=int, help="attention heads, when a checkpoint's shapes cannot tell (default dim/64)")
    p.add_argument("--img-size", type=int, help="input size, when a checkpoint's shapes cannot tell (DINOv2 "
                                                "checkpoints: the size to resize its position grid to; Swin: default "
                                                "the size whose last stage is one window, e.g. 224 for window 7, "
                                                "patch 4, 4 stages)")
    p.add_argument("--mean", type=_floats, metavar="M[,M,M]",
                   help="per-channel input mean on the 0-1 scale, e.g. 0.4914,0.4822,0.4465 (default: the checkpoint's "
                        "own, from its metadata, preprocessor_config.json or timm pretrained_cfg, else ImageNet's)")
    p.add_argument("--std", type=_floats, metavar="S[,S,S]", help="per-channel input std, as --mean")
    p.add_argument("--crop-pct", type=float,
                   help="resize the shorter side to img_size / crop_pct, then crop the center (1.0: no crop; "
                        "default: the checkpoint's own, else 0.875)")
    p.add_argument("--interpolation", choices=("bicubic", "bilinear", "nearest"),
                   help="resize filter of the preprocessing (default: the checkpoint's own, else bicubic)")
    p.add_argument("--bits", default="W8A8", help=bits_help)
    p.add_argument("--calib-images", type=int, default=32, help="calibration images (from the training split)")
    p.add_argument("--data", choices=DATA_CHOICES, default="auto", help="data set (auto: the model's own)")
    p.add_argument("--folder", metavar="DIR",
                   help="image folder for --data imagenet: <synset>/*.JPEG class folders, synset-named files, or "
                        "ILSVRC2012_val_*.JPEG with --labels (default: ../shared/data/imagenet-sample); "
                        "`tsptq eval` decodes it batch by batch")
    p.add_argument("--labels", metavar="FILE",
                   help="ground truth for a flat --folder: lines '<file name> <synset or 0-based class index>' "
                        "(space or comma) or Kaggle's LOC_val_solution.csv (not the devkit's ID-per-line file)")
    p.add_argument("--calib-folder", metavar="DIR",
                   help="--data imagenet: calibrate on --calib-images images of this folder (any --folder layout, "
                        "class-balanced), e.g. train/; default: the first --calib-images of --folder, kept out "
                        "of the evaluation")


def _floats(text: str) -> tuple[float, ...]:
    import argparse

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    return values


def preprocess_from_args(args) -> dict | None:
    """--mean/--std/--crop-pct/--interpolation as the library's ``preprocess`` dict (None when none is given)."""
    given = {"mean": args.mean, "std": args.std, "crop_pct": args.crop_pct, "interpolation": args.interpolation}
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def model_from_args(args):
    """The model a command line names (checkpoint, reference model or timm config), with its preprocessing options."""
    from tsptq.model.checkpoint import resolve_model

    return resolve_model(args.model, args.checkpoint, args.heads, args.img_size, preprocess=preprocess_from_args(args))


def source_from_args(args):
    """The model, method and calibration of a command line as the library's ``Source``."""
    from tsptq.intmodel.integer import Source

    return Source(args.model if not args.checkpoint else None, args.checkpoint, args.heads, args.img_size,
                  args.method, args.bits.upper(), args.data, args.calib_images, args.folder,
                  getattr(args, "labels", None), getattr(args, "calib_folder", None), preprocess_from_args(args))


def eval_data_from_args(args) -> EvalData:
    """The evaluation-image options of a command that runs a finished file (verify, profile); checked where the file
    is read (``tsptq.evaluation.verify.file_eval_set``)."""
    return EvalData(args.data, args.folder, getattr(args, "labels", None), args.eval_images)
