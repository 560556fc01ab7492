"""``tsptq``: the command line.

    tsptq models
    tsptq eval --model cifar10-vit --methods fp32,minmax,percentile,ptf-log2,twin,tsptq --eval-images 10000 --json out.json
"""
from __future__ import annotations

import argparse
import sys

from tsptq.errors import DataError, TsptqError

DATA_CHOICES = ("auto", "bundled", "cifar10", "fashion", "imagenet")


def resolve_data(model_name: str | None, cfg, data: str, calib_n: int, eval_n: int | None, folder: str | None):
    """(calibration set, evaluation set, whether the labels match the model's classes).

    ``auto``: the reference model's own data set (CIFAR-10 for cifar10-vit and dinov2-s14, Fashion-MNIST for
    fashion-vit), falling back to the bundled CIFAR-10 sample when ../shared is absent. Calibration images come
    from the training split, evaluation images from the test split (class-balanced, seeded).
    """
    from tsptq.calib import datasets

    if data == "auto":
        if model_name == "fashion-vit":
            data = "fashion"
        elif cfg.num_classes == 10 and cfg.in_chans == 3:
            data = "cifar10" if datasets.CIFAR10_TARBALL.exists() else "bundled"
        else:
            data = "imagenet"
    if data == "imagenet":  # an image folder has no training split: calibrate on images kept out of the evaluation
        images = datasets.load_image_folder(folder or datasets.IMAGENET_SAMPLE, cfg)
        if len(images) <= calib_n:
            raise DataError(f"{images.name}: {len(images)} images, need more than the {calib_n} calibration images")
        calib, test = images.take(calib_n), images.take(len(images) - calib_n, offset=calib_n)
        return calib, (test if eval_n is None else test.take(min(eval_n, len(test)))), cfg.num_classes == 1000
    load = {"bundled": datasets.load_bundled_sample, "cifar10": datasets.load_cifar10,
            "fashion": datasets.load_fashion_mnist}[data]
    calib, test = load("train"), load("test")
    calib = calib.balanced(calib_n, seed=0)
    test = test if eval_n is None or eval_n >= len(test) else test.balanced(eval_n, seed=0)
    return calib, test, True


def cmd_models(args) -> int:
    from tsptq.calib import zoo
    from tsptq.vit import NAMED_CONFIGS

    print("reference models (trained weights, committed):")
    for name, spec in zoo.REFERENCE_MODELS.items():
        print(f"  {name:<24}{spec.description}")
    print("timm configs (random weights unless --checkpoint is given):")
    for name, cfg in NAMED_CONFIGS.items():
        print(f"  {name:<24}dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, {cfg.img_size}px")
    from tsptq.methods import METHODS

    print("methods:")
    for name, m in METHODS.items():
        print(f"  {name:<24}{m.description if m else 'the float model'}")
    return 0


def cmd_eval(args) -> int:
    from tsptq.checkpoint import resolve_model
    from tsptq.evaluate import evaluate, format_table, plot_drops, write_json_atomic
    from tsptq.methods import parse_bits, parse_methods

    methods = parse_methods(args.methods)
    parse_bits(args.bits)
    if args.calib_images < 1:
        raise TsptqError("--calib-images must be at least 1")
    model = resolve_model(args.model, args.checkpoint, args.heads, args.img_size)
    calib, test, labelled = resolve_data(args.model, model.cfg, args.data, args.calib_images, args.eval_images,
                                         args.folder)
    print(f"{args.model or args.checkpoint}: calibrating on {len(calib)} images ({calib.name}), "
          f"evaluating on {len(test)} ({test.name}), {args.bits.upper()}", file=sys.stderr)
    rows = evaluate(model, calib, test, methods, args.bits, args.batch_size, progress=not args.quiet,
                    labels_valid=labelled)
    print(format_table(rows))
    if args.json:
        write_json_atomic(args.json, {"model": args.model or args.checkpoint, "bits": args.bits.upper(),
                                      "eval_images": len(test), "calib_images": len(calib), "data": test.name,
                                      "results": rows})
    if args.plot:
        plot_drops(rows, f"{args.model or args.checkpoint} {args.bits.upper()}, {len(test)} images", args.plot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tsptq", description="Fully integer-quantized ViTs for the edge (TSPTQ-ViT).")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list reference models, timm configs and quantization methods").set_defaults(fn=cmd_models)

    ev = sub.add_parser("eval", help="quantize with each method and compare top-1 on the same images",
                        description="Calibrate, quantize (fake-quantized simulator of the integer model) and "
                                    "evaluate each method; prints a table and optionally writes JSON and a plot.")
    ev.add_argument("--model", default="cifar10-vit", help="reference model or timm config name (see `tsptq models`)")
    ev.add_argument("--checkpoint", help="a timm-layout .pth/.safetensors checkpoint (overrides --model)")
    ev.add_argument("--heads", type=int, help="attention heads, when a checkpoint's shapes cannot tell (default dim/64)")
    ev.add_argument("--img-size", type=int, help="input size, when a checkpoint's shapes cannot tell")
    ev.add_argument("--methods", default="fp32,minmax,percentile,ptf-log2,twin,tsptq",
                    help="comma-separated methods (see `tsptq models`)")
    ev.add_argument("--bits", default="W8A8", help="weight and activation bits, e.g. W8A8, W6A6, W4A8")
    ev.add_argument("--calib-images", type=int, default=32, help="calibration images (from the training split)")
    ev.add_argument("--eval-images", type=int, default=None, help="evaluation images (default: the whole test set)")
    ev.add_argument("--data", choices=DATA_CHOICES, default="auto", help="data set (auto: the model's own)")
    ev.add_argument("--folder", help="image folder for --data imagenet (default: ../shared/data/imagenet-sample)")
    ev.add_argument("--batch-size", type=int, default=None)
    ev.add_argument("--json", help="write the results here")
    ev.add_argument("--plot", help="write a PNG bar chart of the drops here")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(fn=cmd_eval)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except TsptqError as e:
        print(f"tsptq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
