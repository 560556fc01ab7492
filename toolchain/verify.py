"""``tsptq verify``: the file's integer model against the in-memory one (byte for byte) and the simulator."""
from __future__ import annotations

import sys

import numpy as np

from tsptq.errors import TsptqError


def file_eval_set(fm, args):
    """(recorded source or None, model config, evaluation set, whether labels are valid) of a file's model: the data
    recorded in the file's metadata unless --data/--folder say otherwise."""
    from tsptq.cli import resolve_data
    from tsptq.integer import Source
    from tsptq.vit import ViTConfig

    if args.eval_images is not None and args.eval_images < 1:
        raise TsptqError("--eval-images must be at least 1")
    try:
        src = Source(**fm.metadata["source"]) if "source" in fm.metadata else None
        cfg = ViTConfig.from_dict(fm.metadata["config"]) if "config" in fm.metadata else None
    except (TypeError, ValueError, KeyError) as e:
        raise TsptqError(f"{args.file}: unreadable source or config in the metadata ({e})") from None
    if cfg is None:
        raise TsptqError(f"{args.file}: the metadata has no model config (preprocessing unknown)")
    data = args.data or (src.data if src else "auto")
    # The recorded label file and calibration folder go with the recorded data and folder only.
    recorded = src is not None and data == src.data and not args.folder
    _, test, labelled = resolve_data(src.model if src else None, cfg, data, src.calib_images if src else 1,
                                     args.eval_images, args.folder or (src.folder if src else None),
                                     labels=getattr(args, "labels", None) or (src.labels if recorded else None),
                                     calib_folder=src.calib_folder if recorded else None, eval_only=True)
    return src, cfg, test, labelled


def verify(args) -> int:
    from tsptq.atomic import write_json_atomic
    from tsptq.integer import build, compare, run_batches, run_faithful, run_simulator
    from tsptq.tflite_import import read_tflite

    fm = read_tflite(args.file)
    src, cfg, test, labelled = file_eval_set(fm, args)
    progress = not args.quiet
    print(f"{args.file}: {fm.metadata.get('method')} {fm.metadata.get('bits')}, {len(fm.ops)} ops; "
          f"running on {len(test)} images ({test.name})", file=sys.stderr)
    out_file = run_batches(fm, test, cfg, args.batch_size, progress, desc="file")
    logits_file = fm.dequantize_output(out_file)
    labels = test.labels if labelled else None
    result = {"file": str(args.file), "method": fm.metadata.get("method"), "bits": fm.metadata.get("bits"),
              "eval_images": len(test), "data": test.name}
    if labels is not None:
        result["top1_file"] = round(float(np.mean(logits_file.argmax(-1) == labels)) * 100, 3)
    if not args.no_rebuild:
        if src is None:
            raise TsptqError(f"{args.file}: no recorded source in the metadata; use --no-rebuild")
        im, qm = build(src, progress=progress)
        out_mem = run_batches(im, test, cfg, args.batch_size, progress, desc="in-memory")
        result["bytes_equal_to_in_memory"] = bool(np.array_equal(out_mem, out_file))
        result["equal_output_fraction"] = float(np.mean(out_mem == out_file))
        result["simulator"] = compare(logits_file, run_simulator(qm, test, args.batch_size, progress), labels)
        result["faithful_simulator"] = compare(logits_file, run_faithful(qm, test, args.batch_size, progress), labels)
    print(format_result(result))
    if args.json:
        write_json_atomic(args.json, result)
    return 0 if result.get("bytes_equal_to_in_memory", True) else 1


def format_result(r: dict) -> str:
    lines = [f"images {r['eval_images']} ({r['data']})"]
    if "top1_file" in r:
        lines.append(f"top-1 of the file's integer model   {r['top1_file']:.2f}%")
    if "bytes_equal_to_in_memory" in r:
        same = "yes" if r["bytes_equal_to_in_memory"] else f"NO ({r['equal_output_fraction'] * 100:.3f}% equal)"
        lines.append(f"output bytes equal to the in-memory integer model: {same}")
        s = r["simulator"]
        if "top1_simulator" in s:
            lines.append(f"top-1 of the simulator              {s['top1_simulator']:.2f}%")
        lines.append(f"prediction agreement with the simulator {s['agreement']:.2f}%, "
                     f"logit |error| mean {s['logit_abs_err_mean']:.4f} max {s['logit_abs_err_max']:.4f}")
        f = r["faithful_simulator"]
        lines.append(f"  with the faithful simulator (float64, TFLite rounding at builtins) {f['agreement']:.2f}%, "
                     f"logit |error| mean {f['logit_abs_err_mean']:.4f} max {f['logit_abs_err_max']:.4f}")
    return "\n".join(lines)
