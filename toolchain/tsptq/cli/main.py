"""``tsptq``: the command line.

    tsptq models
    tsptq eval --model cifar10-vit --methods fp32,minmax,percentile,ptf-log2,twin,tsptq --eval-images 10000 --json out.json
    tsptq diagnose --model dinov2-s14 --method tsptq --images 128 --plot budget.png
    tsptq export --model cifar10-vit --method tsptq --out model.tflite
    tsptq inspect model.tflite
    tsptq verify model.tflite --eval-images 1000 --json verify.json
    tsptq verify --runtime c model.tflite --eval-images 10000
    tsptq emit-c model.tflite --out firmware/
    tsptq profile --target mps2-an386 --port socket://127.0.0.1:4444 model.tflite
    tsptq npu-report model.tflite --accelerator ethos-u55-128 --out npu/
    tsptq tflm npu/model.tflite --images 100 --json tflm.json
    tsptq doctor --json doctor.json
"""
from __future__ import annotations

import argparse
import sys

from tsptq.cli.model_args import add_model_args, eval_data_from_args, model_from_args, source_from_args
from tsptq.model.model_data import DATA_CHOICES, resolve_data
from tsptq.errors import TsptqError

def cmd_models(args) -> int:
    from tsptq.model import zoo
    from tsptq.model.swin import NAMED_CONFIGS as SWIN_CONFIGS
    from tsptq.model.vit import NAMED_CONFIGS

    print("reference models (trained weights, committed):")
    for name, spec in zoo.REFERENCE_MODELS.items():
        print(f"  {name:<24}{spec.description}")
    print("timm configs (random weights unless --checkpoint is given):")
    for name, cfg in NAMED_CONFIGS.items():
        print(f"  {name:<24}dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, {cfg.img_size}px")
    for name, cfg in SWIN_CONFIGS.items():
        print(f"  {name:<31}Swin, dim {cfg.embed_dim}, depths {'-'.join(map(str, cfg.depths))}, window "
              f"{cfg.window_size}, {cfg.img_size}px")
    from tsptq.quant.methods import METHODS

    print("methods:")
    for name, m in METHODS.items():
        print(f"  {name:<24}{m.description if m else 'the float model'}")
    return 0


def cmd_eval(args) -> int:
    from tsptq.evaluation.distributed import from_environment
    from tsptq.evaluation.evaluate import (evaluate, format_comparison, format_table, plot_drops, require_engine,
                                           write_json_atomic)
    from tsptq.quant.methods import parse_bits, parse_methods
    from tsptq.evaluation.shards import default_workers

    methods = parse_methods(args.methods)
    parse_bits(args.bits)
    if args.calib_images < 1:
        raise TsptqError("--calib-images must be at least 1")
    if args.eval_images is not None and args.eval_images < 1:
        raise TsptqError("--eval-images must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise TsptqError("--batch-size must be at least 1")
    # On a GPU one process per rank drives it; on CPUs every core is a worker.
    workers = (1 if args.device == "cuda" else default_workers()) if args.workers is None else args.workers
    if workers < 1:
        raise TsptqError("--workers must be at least 1")
    pairs = [_compare_pair(c, methods) for c in args.compare or []]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TsptqError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    engine = args.simulator or args.engine
    cluster = from_environment(args.device)
    try:
        model = model_from_args(args)
        require_engine(model, methods, engine)
        calib, test, labelled = resolve_data(args.model, model.cfg, args.data, args.calib_images, args.eval_images,
                                             args.folder, labels=args.labels, calib_folder=args.calib_folder,
                                             stream=True)
        if cluster.is_main:
            where = f", {cluster.world} ranks" if cluster.world > 1 else ""
            print(f"{args.checkpoint or args.model}: calibrating on {len(calib)} images ({calib.name}), "
                  f"evaluating on {len(test)} ({test.name}), {args.bits.upper()}, engine {engine}, "
                  f"{workers} worker{'s' if workers > 1 else ''}{where}", file=sys.stderr)
        result = evaluate(model, calib, test, methods, args.bits, args.batch_size, progress=not args.quiet,
                          labels_valid=labelled, engine=engine, workers=workers, cluster=cluster,
                          device=args.device, timings=True)
    finally:
        cluster.close()
    if result is None:  # not rank 0: rank 0 reports
        return 0
    print(format_table(result.rows))
    comparisons = [result.compare(a, b) for a, b in pairs]
    for c in comparisons:
        print(format_comparison(c))
    if args.json:
        # No wall-clock figures: the file is identical for any number of workers and ranks (--json-timings adds them).
        drop = () if args.json_timings else ("calib_seconds", "seconds")
        rows = [{k: v for k, v in r.items() if k not in drop} for r in result.rows]
        write_json_atomic(args.json, {"model": args.checkpoint or args.model, "bits": args.bits.upper(),
                                      "eval_images": len(test), "calib_images": len(calib), "data": test.name,
                                      "results": rows, "comparisons": comparisons})
    if args.plot:
        plot_drops(result.rows, f"{args.checkpoint or args.model} {args.bits.upper()}, {len(test)} images", args.plot)
    return 0


def cmd_diagnose(args) -> int:
    from tsptq.data import datasets
    from tsptq.evaluation.diagnose import diagnose, format_budget, plot_budget
    from tsptq.quant.methods import parse_bits
    from tsptq.quant.quantize import quantize

    parse_bits(args.bits)
    if args.calib_images < 1 or args.images < 1 or args.batch_size < 1 or (args.top is not None and args.top < 1):
        raise TsptqError("--calib-images, --images, --batch-size and --top must be at least 1")
    model = model_from_args(args)
    calib, test, _ = resolve_data(args.model, model.cfg, args.data, args.calib_images, args.images, args.folder,
                                  labels=args.labels, calib_folder=args.calib_folder)
    print(f"{args.checkpoint or args.model}: calibrating {args.method} {args.bits.upper()} on {len(calib)} images, "
          f"budget over {len(test)} images ({test.name}), by {args.by}", file=sys.stderr)
    qm = quantize(model, calib, args.method, args.bits, progress=not args.quiet)
    batches = list(datasets.iterate_batches(test.images, model.cfg, args.batch_size))
    result = diagnose(qm, batches, args.by, progress=not args.quiet)
    print(format_budget(result, args.top))
    if args.json:
        from tsptq.atomic import write_json_atomic

        write_json_atomic(args.json, {"model": args.checkpoint or args.model, "data": test.name, **result})
    if args.plot:
        plot_budget(result, args.plot, args.top or 25)
    return 0


def _compare_pair(text: str, methods: list[str]) -> tuple[str, str]:
    pair = [m.strip() for m in text.split(",")]
    if len(pair) != 2 or not all(pair):
        raise TsptqError(f"--compare takes two methods, A,B (got {text!r})")
    for m in pair:
        if m not in methods and m != "fp32":
            raise TsptqError(f"--compare: {m!r} is not among --methods ({', '.join(methods)})")
    return pair[0], pair[1]


def cmd_export(args) -> int:
    from tsptq.tflite.inspect_file import summary

    if args.npu:
        return export_npu_variant(args)
    if args.pv_on_cpu or args.accelerator or args.residual is not None or args.layernorm is not None:
        raise TsptqError("--pv-on-cpu, --accelerator, --residual and --layernorm apply to --npu only")
    if args.method == "tflite-converter":
        return export_stock(args)
    from tsptq.intmodel.integer import build
    from tsptq.tflite.writer import export

    src = source_from_args(args)
    src.validate()
    im, _ = build(src, progress=not args.quiet)
    size = export(im, args.out)
    s = summary(im)
    print(f"{args.out}: {size:,} bytes, {s['ops']} ops ({s['custom_ops']} TSPTQ custom), "
          f"{s['two_scale_tensors']} two-scale tensors, weights {s['weight_bytes']:,} B "
          f"({src.method} {src.bits}, calibrated on {src.calib_images} images)")
    return 0


def export_npu_variant(args) -> int:
    """``tsptq export --npu ethos-u``: the NPU variant, and Vela's compiled file and report beside it."""
    from tsptq.npu.export import check_npu_request, export_npu, npu_form
    from tsptq.npu.vela import format_report

    check_npu_request(args.npu, args.method, args.bits, args.accelerator)  # before any calibration
    residual16, layernorm_npu = npu_form(args.residual, args.layernorm)
    src = source_from_args(args)
    res = export_npu(src, args.out, args.npu, args.accelerator, progress=not args.quiet,
                     split_pv=not args.pv_on_cpu, residual16=residual16, layernorm_npu=layernorm_npu)
    from tsptq.quant.methods import get_method

    if src.method != "fp32" and get_method(src.method).softmax == "uniform":  # a plain int8 BATCH_MATMUL
        pv = "attention x V one int8 BATCH_MATMUL (a uniform Softmax code)"
    else:
        pv = ("attention x V kept on the CPU" if args.pv_on_cpu
              else "attention x V as two int8 BATCH_MATMULs with int32 outputs")
    if residual16:
        pv += "; an int16 residual stream, its adds builtin int16 ADDs"
    if layernorm_npu:
        pv += "; the LayerNorms builtins (ADD, MUL, DEPTHWISE_CONV_2D) around two row statistics on the CPU"
    print(f"{res.path}: {res.size:,} bytes, the NPU variant ({args.npu}: every FC a builtin FULLY_CONNECTED, {pv}; "
          f"{src.method} {src.bits}, calibrated on {src.calib_images} images)")
    if res.report is None:
        print(res.note)
        return 0
    print(format_report(res.report))
    for path in res.written[1:]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def export_stock(args) -> int:
    """``tsptq export --method tflite-converter``: the stock full-integer file of the same model and calibration
    images, with the ops the converter produced and, with ``--eval-images``, its top-1."""
    import numpy as np

    from tsptq.model.model_data import resolve_data
    from tsptq.evaluation.stock_converter import convert, require_convertible, run_tflite

    model = model_from_args(args)
    require_convertible(model)
    calib, test, labelled = resolve_data(args.model, model.cfg, args.data, args.calib_images, args.eval_images or 1,
                                         args.folder, labels=args.labels, calib_folder=args.calib_folder)
    info = convert(model, calib, args.out)
    hist = ", ".join(f"{k} {v}" for k, v in info["op_histogram"].items())
    print(f"{args.out}: {info['bytes']:,} bytes, {info['num_ops']} ops ({hist}); "
          f"left in float: {', '.join(o['op'] for o in info['float_ops']) or 'none'}")
    if args.eval_images:
        logits = run_tflite(args.out, test.images, model.cfg)
        if labelled:
            print(f"top-1 of the stock int8 file on {len(test)} images ({test.name}): "
                  f"{float(np.mean(logits.argmax(-1) == test.labels)) * 100:.2f}%")
    return 0


def cmd_inspect(args) -> int:
    from tsptq.atomic import write_json_atomic  # (not tsptq.evaluation.evaluate: inspect needs no torch)
    from tsptq.tflite.inspect_file import report, to_json
    from tsptq.intmodel.planner import describe, plan
    from tsptq.tflite.reader import read_tflite

    model = read_tflite(args.file)
    print(report(model, ops=not args.brief, tensors=args.tensors))
    arena = plan(model)
    print(describe(arena))
    if args.json:
        write_json_atomic(args.json, dict(to_json(model), c_runtime=arena.to_dict()))
    return 0


def cmd_verify(args) -> int:
    from tsptq.atomic import write_json_atomic

    if args.batch_size < 1:
        raise TsptqError(f"--batch-size must be at least 1 (got {args.batch_size})")
    data = eval_data_from_args(args)
    if args.threads != 1 and args.runtime != "c":
        raise TsptqError("--threads applies to --runtime c (the C runtime's thread pool)")
    if args.runtime == "c":
        from tsptq.runtime.c_binding import format_verify_c
        from tsptq.evaluation.verify import verify_c

        result = verify_c(args.file, data, batch_size=args.batch_size, quiet=args.quiet, threads=args.threads)
        text, ok = format_verify_c(result), result["bit_exact_fraction"] == 1.0
    else:
        from tsptq.evaluation.verify import format_result, verify

        result = verify(args.file, data, batch_size=args.batch_size, rebuild=not args.no_rebuild, quiet=args.quiet)
        text, ok = format_result(result), result.get("bytes_equal_to_in_memory", True)
    print(text)
    if args.json:
        write_json_atomic(args.json, result)
    return 0 if ok else 1


def cmd_emit_c(args) -> int:
    from tsptq.runtime.emit_c import emit_c

    r = emit_c(args.file, args.out, copy_runtime=not args.no_runtime)
    print(f"{r['model_c']}, {r['model_h']}: {r['file_bytes']:,} B model (const), {r['params_bytes']:,} B multipliers "
          f"(const), static arena {r['arena_bytes']:,} B (lower bound {r['activation_lower_bound']:,} B)")
    return 0


def cmd_profile(args) -> int:
    from tsptq.cli.deploy import board_options
    from tsptq.deploy.pipeline import deployment_ok, profile
    from tsptq.deploy.report import format_table, write_reports

    try:  # before anything starts (a board, an agent): the file must be there
        open(args.file, "rb").close()
    except OSError as e:
        raise TsptqError(f"{args.file}: cannot read ({e.strerror})") from None
    opts = board_options(args)
    report = profile(args.file, opts, eval_data_from_args(args))
    print(format_table(report))
    for path in write_reports(report, args.json, args.report):
        print(f"wrote {path}", file=sys.stderr)
    return 0 if deployment_ok(report["result"], opts) else 1


def cmd_npu_report(args) -> int:
    from tsptq.atomic import write_json_atomic
    from tsptq.npu.vela import compile_report, format_report, write_outputs

    report = compile_report(args.file, args.accelerator, args.system_config, args.memory_mode)
    print(format_report(report))
    if args.out:
        for path in write_outputs(report, args.out):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        write_json_atomic(args.json, report.to_json())
    return 0


def cmd_tflm(args) -> int:
    from tsptq.atomic import write_json_atomic
    from tsptq.npu.tflm import format_verify_tflm, verify_tflm

    result = verify_tflm(args.file, eval_data_from_args(args), batch_size=args.batch_size, quiet=args.quiet,
                         min_arena=not args.no_min_arena)
    print(format_verify_tflm(result))
    if args.json:
        write_json_atomic(args.json, result)
    c = result["vs_tflm_arithmetic"]
    return 0 if c["identical_images"] == c["images"] else 1


def cmd_doctor(args) -> int:
    from tsptq.atomic import write_json_atomic
    from tsptq.deploy.doctor import diagnose, format_report

    if args.install:
        from tsptq.cli.system_setup import main as system_setup

        return system_setup(["--for", args.install])
    report = diagnose()
    print(format_report(report))
    if args.json:
        write_json_atomic(args.json, report.to_json())
    return 0  # a report: missing pieces are its content, not a failure (the JSON's "ready" says per feature)


def build_parser() -> argparse.ArgumentParser:
    from tsptq.evaluation.engines import ENGINES

    ap = argparse.ArgumentParser(prog="tsptq", description="Fully integer-quantized ViTs for the edge (TSPTQ-ViT).")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list reference models, timm configs and quantization methods").set_defaults(fn=cmd_models)

    ev = sub.add_parser("eval", help="quantize with each method and compare top-1 on the same images",
                        description="Calibrate, quantize and evaluate each method on the same images (by default "
                                    "each method's exported .tflite file in the C runtime, see --engine), sharded "
                                    "over --workers processes, or over ranks when launched by torchrun; prints "
                                    "top-1, drop and agreement with their 95%% paired bootstrap intervals and "
                                    "class-token cosine, and optionally writes JSON and a plot.")
    add_model_args(ev, bits_help="weight and activation bits, e.g. W8A8, W6A6, W4A8")
    ev.add_argument("--methods", default="fp32,minmax,percentile,ptf-log2,twin,tsptq",
                    help="comma-separated methods (see `tsptq models`)")
    ev.add_argument("--eval-images", type=int, default=None, help="evaluation images (default: the whole test set)")
    ev.add_argument("--batch-size", type=int, default=None,
                    help="images per batch (default 200 up to 64 px, else 32); results do not depend on --workers")
    ev.add_argument("--engine", choices=ENGINES, default="auto",
                    help="what runs each quantized model. c: the method's exported .tflite in the C runtime, the "
                         "bytes `tsptq verify --runtime c` checks; faithful: the float64 simulator with TFLite's "
                         "rounding at the builtin ops; float32: the fast fake-quantized simulator. auto (default): c "
                         "where the method has an integer model and a C compiler is here. A method without an "
                         "integer model (A<8) falls back to faithful, then float32; each row names its engine")
    ev.add_argument("--simulator", choices=("faithful", "float32"), default=None, help=argparse.SUPPRESS)
    ev.add_argument("--workers", type=int, default=None,
                    help="worker processes, each single-threaded (default: every core; under torchrun, the cores "
                         "divided among the ranks on a node; with --device cuda, 1). Any count gives the same results")
    ev.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: run the float32 simulator (and FP32) on the GPU; the C engine and the faithful "
                         "simulator run on the CPU. Under torchrun, cuda selects nccl (gloo otherwise)")
    ev.add_argument("--compare", action="append", metavar="A,B",
                    help="also print the paired top-1 difference A - B with its 95%% bootstrap interval and "
                         "McNemar's p-value (repeatable)")
    ev.add_argument("--json-timings", action="store_true",
                    help="also write wall-clock seconds into --json (which is otherwise identical for any "
                         "--workers and any number of torchrun ranks)")
    ev.add_argument("--json", help="write the results here")
    ev.add_argument("--plot", help="write a PNG bar chart of the drops here")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(fn=cmd_eval)

    dg = sub.add_parser("diagnose", help="error budget: what each quantization point costs, alone and left float",
                        description="Quantize with one method, then for each quantization point (or block, or "
                                    "role) measure top-1 agreement and class-token cosine against FP32 twice: with "
                                    "only that point quantized, and with everything but that point quantized. "
                                    "Prints the units sorted costliest first (the fast float32 simulator measures; "
                                    "weights and the position embedding are units too).")
    add_model_args(dg, bits_help="weight and activation bits, e.g. W8A8, W6A6, W4A8")
    dg.add_argument("--method", default="tsptq", help="the quantization method to diagnose (default tsptq)")
    dg.add_argument("--images", type=int, default=256,
                    help="evaluation images the budget is measured on (default 256). Memory: two residual streams "
                         "per block are cached, e.g. about 2.6 GB for dinov2-s14 at 256 images")
    dg.add_argument("--by", choices=("point", "block", "role"), default="point",
                    help="unit: every point alone (default); every block's points together; or one role "
                         "(e.g. all softmax outputs, all fc2 weights) over every block")
    dg.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    dg.add_argument("--top", type=int, default=None,
                    help="print and plot only the TOP costliest units (default: print all, plot 25)")
    dg.add_argument("--json", help="write every unit's numbers here")
    dg.add_argument("--plot", help="write a PNG of the costliest units here")
    dg.add_argument("--quiet", action="store_true", help="no progress bars")
    dg.set_defaults(fn=cmd_diagnose)

    ex = sub.add_parser("export", help="calibrate, quantize and write an int8 .tflite file",
                        description="Writes a TFLite-schema int8 flatbuffer: builtin ops where TFLite can express "
                                    "the codes, TSPTQ_* custom ops (flexbuffer options) for LayerNorm, Softmax, "
                                    "GELU and the consumers of two-scale codes, and a versioned 'tsptq' metadata "
                                    "entry. --method tflite-converter instead runs the stock PyTorch -> ONNX -> "
                                    "onnx2tf full-integer path (needs the 'converter' extra).")
    add_model_args(ex)
    ex.add_argument("--method", default="tsptq", help="quantization method (see `tsptq models`) or tflite-converter")
    ex.add_argument("--out", required=True, help="the .tflite file to write (atomically)")
    ex.add_argument("--eval-images", type=int, default=None,
                    help="tflite-converter only: also measure top-1 of the converted file on this many test images")
    ex.add_argument("--npu", choices=("ethos-u",), default=None,
                    help="write the NPU variant (W8A8): every multiply-accumulate op a builtin that Vela maps to "
                         "an Ethos-U (FULLY_CONNECTED, 16x8 where a two-scale code feeds it; attention x V as two "
                         "int8 BATCH_MATMULs with int32 outputs), by default with an int16 residual stream (its adds "
                         "builtin int16 ADDs) and the LayerNorms as NPU builtins; Softmax, GELU, the LayerNorms' row "
                         "statistics and the sum of attention x V's two parts stay TSPTQ_* ops on the CPU. "
                         "With Vela installed (the npu extra) also its compiled OUT_vela.tflite, CSVs and "
                         "OUT_npu.json report beside --out (docs/npu.md). With --method tsptq-no-v2sf-softmax the "
                         "Softmax output is a uniform 8-bit code and attention x V one int8 BATCH_MATMUL: a shorter "
                         "NPU part (docs/npu.md, the uniform-P variant)")
    ex.add_argument("--accelerator", default=None, metavar="CONFIG",
                    help="with --npu: Vela's --accelerator-config (default ethos-u55-128, see tsptq npu-report)")
    ex.add_argument("--pv-on-cpu", action="store_true",
                    help="with --npu: keep attention x V of a two-scale softmax code as a TSPTQ_BMM_2S custom op "
                         "on the CPU instead of splitting it into two int8 BATCH_MATMULs (the same bytes; "
                         "cifar10-vit: 94.4%% of its MACs on the NPU, not 100%%; TFLite Micro, which has no int32 "
                         "BATCH_MATMUL, runs this form)")
    ex.add_argument("--residual", choices=("code", "int16"), default=None,
                    help="with --npu: the residual stream (every LayerNorm input) as int16 on a finer step (int16, "
                         "the default: every residual add a builtin int16 ADD on the NPU) or as the default file's "
                         "8-bit code (code: the file computes the default file's bytes; the adds of a two-scale "
                         "residual code and the LayerNorms are TSPTQ_* ops on the CPU)")
    ex.add_argument("--layernorm", choices=("cpu", "npu"), default=None,
                    help="with --npu and the int16 residual stream: each LayerNorm as NPU builtins (int16 ADD and "
                         "MUL, a 1x1 16x8 DEPTHWISE_CONV_2D for gamma and beta) around two row statistics on the "
                         "CPU, sized on the calibration images (npu, the default; a finer LayerNorm output), or as "
                         "one TSPTQ_LAYERNORM_2S_I16 op on the CPU (cpu); docs/npu.md")
    ex.add_argument("--quiet", action="store_true", help="no progress bars")
    ex.set_defaults(fn=cmd_export)

    ins = sub.add_parser("inspect", help="ops, tensors, quantization and two-scale entries of a tsptq .tflite file")
    ins.add_argument("file")
    ins.add_argument("--brief", action="store_true", help="the summary only (no op table)")
    ins.add_argument("--tensors", action="store_true", help="also the table of every tensor")
    ins.add_argument("--json", help="write the same as JSON here")
    ins.set_defaults(fn=cmd_inspect)

    ve = sub.add_parser("verify", help="run a .tflite file's integer model and compare it with the in-memory one",
                        description="Rebuilds the integer model from the file alone and runs it on the evaluation "
                                    "images; rebuilds the in-memory integer model from the file's recorded source "
                                    "(model, method, calibration) and checks that both give the same output bytes; "
                                    "reports top-1 of the file, of the simulator, and their agreement.")
    ve.add_argument("file")
    ve.add_argument("--eval-images", type=int, default=500, help="evaluation images (default 500)")
    ve.add_argument("--data", choices=DATA_CHOICES, default=None, help="data set (default: the one recorded in the file)")
    ve.add_argument("--folder", metavar="DIR", help="image folder for --data imagenet")
    ve.add_argument("--labels", metavar="FILE",
                    help="label file for a flat --folder (see `tsptq eval --help`; default: the one recorded in the file)")
    ve.add_argument("--no-rebuild", action="store_true", help="run the file only: skip the in-memory rebuild and simulator")
    ve.add_argument("--batch-size", type=int, default=50)
    ve.add_argument("--runtime", choices=("python", "c"), default="python",
                    help="c: run the C runtime (built for this host) and compare it byte for byte with the Python "
                         "integer reference (bit-exact fraction, top-1)")
    ve.add_argument("--threads", type=int, default=1,
                    help="--runtime c: run each image on N threads (the C runtime's thread pool, 1 to 8; default 1)")
    ve.add_argument("--json", help="write the results here")
    ve.add_argument("--quiet", action="store_true", help="no progress bars")
    ve.set_defaults(fn=cmd_verify)

    ec = sub.add_parser("emit-c", help="write model.c/model.h for firmware (model const, static arena)",
                        description="Generates model.c/model.h: the .tflite bytes as a const array, the builtin "
                                    "multipliers precomputed as const data, a static arena of exactly the planned "
                                    "size and tsptq_model_invoke(); copies the runtime sources beside them.")
    ec.add_argument("file")
    ec.add_argument("--out", required=True, help="directory for model.c, model.h and tsptq_runtime/")
    ec.add_argument("--no-runtime", action="store_true", help="do not copy the C runtime sources into --out")
    ec.set_defaults(fn=cmd_emit_c)

    from tsptq.cli.deploy import add_board_args
    from tsptq.deploy.targets import list_targets

    pr = sub.add_parser("profile", help="run a .tflite file on a board: on-device top-1, bit-exactness, latency, per-op time",
                        description="The board part of tsptq-deploy for an existing file: connects to the board "
                                    "(--port) or starts it here, uploads the model unless the board already holds "
                                    "it, runs the evaluation images recorded in the file's metadata and compares "
                                    "every output with the host integer reference.")
    pr.add_argument("file")
    pr.add_argument("--target", required=True, choices=list_targets(), help="the board's target (targets/<name>/)")
    pr.add_argument("--data", choices=DATA_CHOICES, default=None, help="data set (default: the one recorded in the file)")
    pr.add_argument("--folder", metavar="DIR", help="image folder for --data imagenet")
    pr.add_argument("--labels", metavar="FILE",
                    help="label file for a flat --folder (see `tsptq eval --help`; default: the one recorded in the file)")
    add_board_args(pr)
    pr.set_defaults(fn=cmd_profile)

    from tsptq.npu.vela import ACCELERATORS, DEFAULT_ACCELERATOR

    nr = sub.add_parser("npu-report", help="what Arm's Vela compiler puts on an Ethos-U NPU: ops, MACs, time, memory",
                        description="Compiles a .tflite file with Arm's Vela compiler (the 'npu' extra: pip install "
                                    "-e '.[npu]') for an Ethos-U NPU and reports which ops, and what share of the "
                                    "multiply-accumulates, run on the NPU and which stay on the CPU (with Vela's "
                                    "reasons), how often the graph switches between them, Vela's estimated "
                                    "inference time of the NPU part (CPU ops not included) and the SRAM and "
                                    "off-chip flash it uses. The default system is a Corstone-300 class board: "
                                    "Ethos-U55-128 at 500 MHz beside a Cortex-M55 (Vela's "
                                    "Ethos_U55_High_End_Embedded, Shared_Sram). Vela runs in a temporary directory; "
                                    "nothing is written unless --out or --json is given.")
    nr.add_argument("file", help="the .tflite file (any: tsptq's, the stock converter's)")
    nr.add_argument("--accelerator", choices=ACCELERATORS, default=DEFAULT_ACCELERATOR, metavar="CONFIG",
                    help=f"Vela's --accelerator-config: {', '.join(ACCELERATORS)} (default {DEFAULT_ACCELERATOR})")
    nr.add_argument("--system-config", default=None,
                    help="a system configuration of Vela's Arm/vela.ini (default: Ethos_U55_High_End_Embedded for "
                         "a U55, Ethos_U65_High_End for a U65, Ethos_U85_SYS_DRAM_Mid for a U85)")
    nr.add_argument("--memory-mode", default=None,
                    help="a memory mode of Arm/vela.ini (default: Shared_Sram for a U55, Dedicated_Sram otherwise)")
    nr.add_argument("--out", metavar="DIR",
                    help="write Vela's compiled FILE_vela.tflite (ready for the Ethos-U driver of TFLite Micro) and "
                         "its summary and per-layer CSVs into this directory (created)")
    nr.add_argument("--json", metavar="FILE", help="also write the report here")
    nr.set_defaults(fn=cmd_npu_report)

    tf = sub.add_parser("tflm", help="run an NPU variant file in TensorFlow Lite Micro and compare it with its integer model",
                        description="Loads a .tflite file (the NPU variant, tsptq export --npu ethos-u --pv-on-cpu) "
                                    "in TensorFlow Lite Micro (the pinned tflite-micro wheel, the 'tflm' extra) with "
                                    "tsptq's custom ops, runs the evaluation images and compares every output with "
                                    "the file's Python integer model (a variant's is rebuilt from the source recorded "
                                    "in the file and must write the file's bytes) and with that model under TFLM's "
                                    "own FULLY_CONNECTED 16x8 rounding and int16 MUL multiplier. Prints TFLM's arena, byte-identical images, the "
                                    "largest difference in codes and the top-1 agreement (docs/tflm.md). Exit status "
                                    "1 when TFLM differs from the TFLM-rounding model on any image.")
    tf.add_argument("file")
    tf.add_argument("--images", "--eval-images", dest="eval_images", type=int, default=100,
                    help="evaluation images (default 100)")
    tf.add_argument("--data", choices=DATA_CHOICES, default=None, help="data set (default: the one recorded in the file)")
    tf.add_argument("--folder", metavar="DIR", help="image folder for --data imagenet")
    tf.add_argument("--labels", metavar="FILE",
                    help="label file for a flat --folder (see `tsptq eval --help`; default: the one recorded in the file)")
    tf.add_argument("--batch-size", type=int, default=25)
    tf.add_argument("--no-min-arena", action="store_true",
                    help="skip the search for the smallest arena TFLM prepares the file in (a bisection)")
    tf.add_argument("--json", metavar="FILE", help="write the results here")
    tf.add_argument("--quiet", action="store_true", help="no progress bars")
    tf.set_defaults(fn=cmd_tflm)

    dr = sub.add_parser("doctor", help="what this machine has and lacks for each target and feature, with install commands",
                        description="Lists, for every target in targets/ (and its --runtime litert), the C runtime, "
                                    "fuzzing, the Arm SIMD kernel tests, the accuracy data sets, dinov2-s14, the "
                                    "stock-converter baseline and the tflite-runtime 2.14 venv, what each needs "
                                    "(compilers, QEMU, flash tools, Python packages at the project's pins, data "
                                    "sets), where it was found, and the command that installs each missing piece "
                                    "(apt-get ones as root). Installs nothing, compiles nothing, uses no network. "
                                    "Exit status 0 whenever the report was made, whatever is missing. With "
                                    "--install it installs the Debian packages instead (what make demo / make test "
                                    "do first).")
    dr.add_argument("--json", metavar="FILE", help="also write the findings here (per feature: ready; per thing: found, ok, "
                                   "needed_for, install)")
    dr.add_argument("--install", choices=("demo", "test"), default=None,
                    help="install (as root, with apt-get) the Debian packages that make demo or make test needs, "
                         "or stop with the command to run; exit status 2 when something could not be installed")
    dr.set_defaults(fn=cmd_doctor)
    return ap


# What each command writes: (option, attribute, whether it is a directory). Checked before any work starts, so that
# an output in a missing or read-only directory fails at once, not after an hour of evaluation.
OUTPUTS = {
    "eval": (("--json", "json", False), ("--plot", "plot", False)),
    "export": (("--out", "out", False),),
    "inspect": (("--json", "json", False),),
    "verify": (("--json", "json", False),),
    "emit-c": (("--out", "out", True),),
    "profile": (("--json", "json", False), ("--report", "report", True)),
    "npu-report": (("--out", "out", True), ("--json", "json", False)),
    "tflm": (("--json", "json", False),),
    "doctor": (("--json", "json", False),),
}


def check_outputs(args) -> None:
    """``OutputError`` (``--json PATH: cannot write PATH: why``) for an output option that could not be written."""
    from tsptq.atomic import OutputError, check_writable

    for option, attr, directory in OUTPUTS.get(args.command, ()):
        path = getattr(args, attr, None)
        if path:
            try:
                check_writable(path, directory=directory)
            except OutputError as e:
                raise OutputError(f"{option}: {e}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)
        return args.fn(args)
    except TsptqError as e:
        print(f"tsptq: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tsptq inspect ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C (SIGTERM in `profile`, see tsptq.deploy.pipeline): cleanup ran in the finally blocks
        print("tsptq: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a file the user named (or one they must fix) that cannot be used: one line, not a traceback
        if e.filename is None:
            raise
        print(f"tsptq: error: {e.filename}: {(e.strerror or str(e)).lower()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
