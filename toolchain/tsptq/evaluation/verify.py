"""Verify a file: its integer model against the in-memory one (byte for byte) and the simulator, or against the C
runtime (the library behind ``tsptq verify``)."""
from __future__ import annotations

import sys

import numpy as np

from tsptq.model.model_data import EvalData, resolve_data
from tsptq.errors import TsptqError


def file_eval_set(fm, file, want: EvalData):
    """(recorded source or None, model config, evaluation set, whether labels are valid) of the model of ``file``
    (read as ``fm``): the data recorded in the file's metadata unless ``want`` says otherwise."""
    from tsptq.intmodel.integer import Source
    from tsptq.model.swin import SwinConfig
    from tsptq.model.vit import ViTConfig

    if want.images is not None and want.images < 1:
        raise TsptqError("--eval-images must be at least 1")
    try:
        src = Source(**fm.metadata["source"]) if "source" in fm.metadata else None
        config = fm.metadata.get("config")
        cfg = None if config is None else (SwinConfig if config.get("arch") == "swin" else ViTConfig).from_dict(config)
    except (TypeError, ValueError, KeyError) as e:
        raise TsptqError(f"{file}: unreadable source or config in the metadata ({e})") from None
    if cfg is None:
        raise TsptqError(f"{file}: the metadata has no model config (preprocessing unknown)")
    data = want.data or (src.data if src else "auto")
    # The recorded label file and calibration folder go with the recorded data and folder only.
    recorded = src is not None and data == src.data and not want.folder
    _, test, labelled = resolve_data(src.model if src else None, cfg, data, src.calib_images if src else 1,
                                     want.images, want.folder or (src.folder if src else None),
                                     labels=want.labels or (src.labels if recorded else None),
                                     calib_folder=src.calib_folder if recorded else None, eval_only=True)
    return src, cfg, test, labelled


def verify(file, data: EvalData = EvalData(), *, batch_size: int = 50, rebuild: bool = True,
           quiet: bool = False) -> dict:
    """Run the file's integer model on the evaluation images; with ``rebuild`` rebuild the in-memory model from the
    source recorded in the file and compare outputs byte for byte, and both simulators' predictions."""
    from tsptq.intmodel.faithful import applies as faithful_applies
    from tsptq.intmodel.integer import build, compare, run_batches, run_faithful, run_simulator
    from tsptq.tflite.reader import read_tflite

    if batch_size < 1:
        raise TsptqError(f"--batch-size must be at least 1 (got {batch_size})")
    fm = read_tflite(file)
    src, cfg, test, labelled = file_eval_set(fm, file, data)
    progress = not quiet
    print(f"{file}: {fm.metadata.get('method')} {fm.metadata.get('bits')}, {len(fm.ops)} ops; "
          f"running on {len(test)} images ({test.name})", file=sys.stderr)
    out_file = run_batches(fm, test, cfg, batch_size, progress, desc="file")
    logits_file = fm.dequantize_output(out_file)
    labels = test.labels if labelled else None
    result = {"file": str(file), "method": fm.metadata.get("method"), "bits": fm.metadata.get("bits"),
              "eval_images": len(test), "data": test.name}
    if labels is not None:
        result["top1_file"] = round(float(np.mean(logits_file.argmax(-1) == labels)) * 100, 3)
    if rebuild:
        if src is None:
            raise TsptqError(f"{file}: no recorded source in the metadata; use --no-rebuild")
        im, qm = build(src, progress=progress)
        out_mem = run_batches(im, test, cfg, batch_size, progress, desc="in-memory")
        result["bytes_equal_to_in_memory"] = bool(np.array_equal(out_mem, out_file))
        result["equal_output_fraction"] = float(np.mean(out_mem == out_file))
        result["simulator"] = compare(logits_file, run_simulator(qm, test, batch_size, progress), labels)
        if faithful_applies(qm):  # (not a Swin)
            result["faithful_simulator"] = compare(logits_file, run_faithful(qm, test, batch_size, progress), labels)
    return result


def verify_c(file, data: EvalData = EvalData(), *, batch_size: int = 50, quiet: bool = False,
             threads: int = 1) -> dict:
    """The C runtime against the Python integer reference on the evaluation images (``bit_exact_fraction`` 1.0 when
    every image's output bytes are equal); ``threads``: per image, in the C runtime (1 to 8)."""
    from tsptq.runtime.c_binding import verify_c as run_both
    from tsptq.tflite.reader import read_tflite

    if batch_size < 1:
        raise TsptqError(f"--batch-size must be at least 1 (got {batch_size})")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 8:
        raise TsptqError(f"--threads must be 1 to 8 (the C runtime's TSPTQ_MAX_THREADS), got {threads!r}")
    fm = read_tflite(file)
    _, cfg, test, labelled = file_eval_set(fm, file, data)
    print(f"{file}: C runtime vs the integer reference on {len(test)} images ({test.name})", file=sys.stderr)
    result = run_both(file, test, cfg, batch_size=batch_size, progress=not quiet, threads=threads)
    if not labelled:
        result.pop("top1_c", None)
        result.pop("top1_reference", None)
    result["data"] = test.name
    return result


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
        if f := r.get("faithful_simulator"):  # (none for a Swin)
            lines.append(f"  with the faithful simulator (float64, TFLite rounding at builtins) {f['agreement']:.2f}%, "
                         f"logit |error| mean {f['logit_abs_err_mean']:.4f} max {f['logit_abs_err_max']:.4f}")
    return "\n".join(lines)
