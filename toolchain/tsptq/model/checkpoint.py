"""Turn a user's model reference (checkpoint file, reference-model name or timm config name) into a VisionTransformer
(or a SwinTransformer).

Checkpoints are timm/DeiT state dicts (see :mod:`tsptq.model.vit` for the key layout) or Hugging Face ViT/DeiT/DINOv2
ones (:mod:`tsptq.model.hf_layout`), as a file or a folder (``save_pretrained``'s, a hub snapshot); the architecture is
read from the tensor shapes. timm / Microsoft Swin state dicts are recognised by their keys and read by
:mod:`tsptq.model.swin_layout` (quantized by :mod:`tsptq.quant.qswin`, lowered by :mod:`tsptq.intmodel.lower_swin`).
Two things can't be seen in a ViT's shapes:

* the number of heads: defaults to ``embed_dim // 64`` (timm's ViT/DeiT convention), pass ``heads`` otherwise;
* the preprocessing: defaults to ImageNet mean/std with crop 0.875 (DeiT). timm's ``vit_*`` (augreg) checkpoints
  were trained with mean = std = 0.5 and crop 0.9: pass ``preprocess=dict(mean=(.5,) * 3, std=(.5,) * 3, crop_pct=0.9)``.

What shapes cannot tell is also read, when present, from the checkpoint itself (tsptq's safetensors metadata) or
from the files beside it: an HF ``config.json`` (heads, LayerNorm eps) and ``preprocessor_config.json``, or a timm hub
``config.json`` (``pretrained_cfg``: mean, std, crop_pct, interpolation). Explicit arguments (the CLI's ``--mean`` ...)
win over all of them.

LayerNorm eps is timm's 1e-6 unless a config says otherwise. Position embeddings are never interpolated (the image
size is the one they were trained at), except DINOv2's, which transformers itself interpolates for any input size.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from pathlib import Path

import torch

from tsptq.errors import ModelError, some_of
from tsptq.model import swin, swin_layout
from tsptq.model.vit import NAMED_CONFIGS, ViTConfig, VisionTransformer, create_model

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
CONTAINER_KEYS = ("model", "state_dict", "model_ema")  # training checkpoints wrap the weights in one of these
IMAGENET_PREPROCESS = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875,
                           interpolation="bicubic")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "model.onnx")  # in a folder


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .pth/.pt/.bin or .safetensors file into a timm-keyed state dict (containers and `module.` removed).
    (.onnx files are read by :mod:`tsptq.model.onnx_import`, through :func:`load_checkpoint`.)"""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        obj = _read_safetensors(path)
    elif path.suffix in TORCH_SUFFIXES:
        obj = _read_torch(path)
    else:
        raise ModelError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .safetensors, "
                         + ", ".join(TORCH_SUFFIXES))
    return _canonical_keys(_unwrap(obj, path))


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as e:  # the Rust binding raises its own SafetensorError
        raise ModelError(f"{path}: not a readable safetensors file, corrupt or truncated? ({_first_line(e)})") from None


def _read_torch(path: Path) -> object:
    try:
        with warnings.catch_warnings():  # torch's advice about pickle protocols: not for the user of a checkpoint
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and EOF errors all mean the same thing to the user...
        refused = _refused_global(str(e)) or _foreign_global(path)  # ...unless it refused to run a pickled object
        if refused:
            raise ModelError(f"{path}: refused to load {refused} from the checkpoint: only tensors and plain "
                             "containers are allowed (a checkpoint with pickled objects can run code; save only "
                             "the weights, e.g. torch.save(model.state_dict(), path))") from None
        raise ModelError(f"{path}: not a readable PyTorch checkpoint, corrupt or truncated? ({_first_line(e)})") from None


# globals that the tensors and containers of a state dict pickle to (torch's weights-only unpickler refuses most else)
_SAFE_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.core.multiarray.",
                 "numpy._core.multiarray.", "numpy.dtype", "numpy.ndarray", "numpy.dtypes.")
_ALIASES = {"posix": "os", "nt": "os", "__builtin__": "builtins"}  # what a pickle calls os.system on each system


def _refused_global(message: str) -> str | None:
    """The ``module.name`` torch's weights-only unpickler says it refused, if that is what it says."""
    m = (re.search(r"Unsupported global: GLOBAL (\S+?)(?: was not|\s|$)", message)
         or re.search(r"unsupported GLOBAL (\S+) whose module", message))
    return _readable(m[1]) if m else None


def _readable(name: str) -> str:
    module, _, attr = name.rpartition(".")
    if not module:  # torch names a builtin without its module
        return f"builtins.{name}"
    if module in _ALIASES:
        return f"{_ALIASES[module]}.{attr} ({name})"
    return name


def _foreign_global(path: Path) -> str | None:
    """The first global outside the tensor machinery that the file's pickle names, found by reading its opcodes
    (nothing is run): for files that torch rejects before reaching the global (e.g. a raw pickle of protocol 4)."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                stream = z.open(name)
        else:
            stream = open(path, "rb")
            if stream.read(1) != b"\x80":  # PROTO: every pickle torch.save writes starts so (not a zip, not torch)
                stream.close()
                return None
            stream.seek(0)
    except (OSError, zipfile.BadZipFile):
        return None
    with stream:
        for _ in range(8):  # the legacy format is a few pickles in a row (magic, version, sys info, the object)
            try:
                for name in _globals(pickletools.genops(stream)):
                    if not re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", name):
                        return None  # not a name: random bytes that happen to parse
                    if not (name + ".").startswith(_SAFE_GLOBALS):
                        return _readable(name)
            except Exception:  # noqa: BLE001 -- not (or no more) pickle opcodes: stop reading
                return None
    return None


def _globals(ops):
    """The ``module.name`` of each GLOBAL / STACK_GLOBAL in a stream of pickle opcodes (memoized strings followed)."""
    memo, strings, last, memoized = {}, [], None, 0
    for op, arg, _ in ops:
        if op.name == "STOP":
            return
        if isinstance(arg, str) and op.name.endswith(("UNICODE", "UNICODE8", "STRING")):
            strings.append(arg)
            last = arg
            continue
        if op.name == "MEMOIZE":  # memoizes the top of the stack: a string only if one was just pushed
            memo[memoized] = last
            memoized += 1
            continue
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
            continue
        last = None
        if op.name in ("GET", "BINGET", "LONG_BINGET") and memo.get(arg) is not None:
            strings.append(last := memo[arg])
        elif op.name == "GLOBAL":
            yield arg.replace(" ", ".")
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            yield f"{strings[-2]}.{strings[-1]}"


def _first_line(e: Exception) -> str:
    msg = str(e).split("WeightsUnpickler error:")[-1]  # torch's weights-only errors bury the cause after a long preamble
    line = next((s.strip() for s in msg.splitlines() if s.strip()), "")
    return line.split(". ")[0][:160] or type(e).__name__


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict) and (key := next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)):
        obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"{path}: does not hold a state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: not a state dict, these entries are not tensors: {some_of(bad)}")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _canonical_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the older LayerScale keys `blocks.N.gamma_1/gamma_2` to timm's `blocks.N.ls1.gamma/ls2.gamma`."""
    return {re.sub(r"^(blocks\.\d+)\.gamma_([12])$", r"\1.ls\2.gamma", k): v for k, v in sd.items()}


def infer_config(state_dict: dict[str, torch.Tensor], heads: int | None = None, img_size: int | None = None,
                 num_classes: int | None = None, preprocess: dict | None = None, ln_eps: float | None = None
                 ) -> ViTConfig:
    """The ViTConfig a timm-layout state dict was saved from (``num_classes`` only checks, it never changes the head)."""
    sd = _canonical_keys(state_dict)
    _refuse_torch_encoder(sd)
    for key in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise ModelError(f"not a timm-layout ViT state dict: no {key!r} (keys: {some_of(sorted(sd))})")
    if sd["patch_embed.proj.weight"].ndim != 4:
        raise ModelError(f"patch_embed.proj.weight has shape {tuple(sd['patch_embed.proj.weight'].shape)}, not a conv kernel")
    embed_dim, in_chans, patch, patch_w = sd["patch_embed.proj.weight"].shape
    if patch != patch_w:
        raise ModelError(f"non-square patches {patch}x{patch_w} are not supported")
    classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    if num_classes is not None and num_classes != classes:
        raise ModelError(f"num_classes={num_classes} but the checkpoint's head has {classes} classes")
    dist = "dist_token" in sd
    pool = _global_pool(sd, embed_dim, dist)
    return ViTConfig(
        img_size=_infer_img_size(sd.get("pos_embed"), patch, 1 + dist, img_size),
        patch_size=patch, in_chans=in_chans, num_classes=classes, embed_dim=embed_dim,
        depth=len({k.split(".")[1] for k in sd if k.startswith("blocks.")}),
        num_heads=_check_heads(embed_dim, heads), mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
        layer_scale="blocks.0.ls1.gamma" in sd, dist_token=dist, global_pool=pool, **_preprocess(in_chans, preprocess),
        **({"ln_eps": float(ln_eps)} if ln_eps is not None else {}))


def _global_pool(sd: dict, embed_dim: int, dist: bool) -> str:
    """What the head reads, from its width: the class token (embed_dim), or the class token and the patch-token mean
    concatenated (2 x embed_dim, DINOv2's linear classifiers)."""
    if "head.weight" not in sd:
        return "token"
    width = sd["head.weight"].shape[1]
    if width == embed_dim:
        return "token"
    if width == 2 * embed_dim and not dist:
        return "token+avg"
    raise ModelError(f"head.weight reads {width} features; the model has {embed_dim} channels (a head reads the class "
                     f"token: {embed_dim}, or the class token and the patch-token mean: {2 * embed_dim})")


def _refuse_torch_encoder(sd: dict) -> None:
    """``torch.nn.TransformerEncoder`` layers (``layers.N.self_attn.in_proj_weight``): their state dict is the same
    whether the LayerNorms come after each residual add (norm_first=False, the default: post-norm) or before it, so
    the weights alone cannot say which model they are; and tsptq's integer ViT is pre-norm (timm's layout)."""
    if any(re.search(r"(^|\.)layers\.\d+\.self_attn\.in_proj_weight$", k) for k in sd):
        raise ModelError("a torch.nn.TransformerEncoder state dict (layers.N.self_attn.in_proj_weight ...) is not "
                         "supported: its weights do not say whether it is post-norm (norm_first=False, the default) "
                         "or pre-norm, and tsptq quantizes pre-norm ViTs; supported: timm ViT/DeiT layouts and Hugging "
                         "Face ViT/DeiT/DINOv2 (rewrite the model as a timm-style pre-norm ViT to quantize it)")


def _infer_img_size(pos_embed: torch.Tensor | None, patch: int, prefix: int, img_size: int | None) -> int:
    if pos_embed is None:
        if img_size is None:
            raise ModelError("the checkpoint has no pos_embed, so the image size can't be inferred: pass img_size")
        return img_size
    tokens = pos_embed.shape[1]
    grid = math.isqrt(max(tokens - prefix, 0))
    if img_size is None:
        if grid * grid != tokens - prefix:
            raise ModelError(f"pos_embed has {tokens} tokens, not {prefix} prefix token(s) plus a square grid: pass img_size")
        return grid * patch
    if (img_size // patch) ** 2 + prefix != tokens:
        raise ModelError(f"img_size={img_size} needs {(img_size // patch) ** 2 + prefix} position embeddings but the "
                         f"checkpoint has {tokens} (trained at {grid * patch}?); position embeddings are not interpolated")
    return img_size


def _check_heads(embed_dim: int, heads: int | None) -> int:
    if heads is None:
        if embed_dim % 64:
            raise ModelError(f"embed_dim {embed_dim} is not a multiple of 64, so the number of heads can't be "
                             "inferred: pass heads")
        return embed_dim // 64
    if heads <= 0 or embed_dim % heads:
        raise ModelError(f"heads={heads} does not divide embed_dim {embed_dim}")
    return heads


def _preprocess(in_chans: int, preprocess: dict | None) -> dict:
    p = {**IMAGENET_PREPROCESS, **(preprocess or {})}
    return check_preprocess(p, in_chans)


def check_preprocess(p: dict, in_chans: int) -> dict:
    """mean, std, crop_pct, interpolation (any subset), checked against the model's input channels."""
    from tsptq.data.datasets import INTERPOLATIONS

    if unknown := sorted(p.keys() - IMAGENET_PREPROCESS.keys()):
        raise ModelError(f"preprocess takes {', '.join(IMAGENET_PREPROCESS)}; unknown: {', '.join(unknown)}")
    p = dict(p)
    for key in ("mean", "std"):
        if key in p:
            try:
                p[key] = tuple(float(v) for v in (p[key] if isinstance(p[key], (list, tuple)) else [p[key]]))
            except (TypeError, ValueError):
                raise ModelError(f"{key} must be numbers, got {p[key]!r}") from None
            if len(p[key]) not in (1, in_chans):
                raise ModelError(f"the model takes {in_chans} input channel(s): {key} needs {in_chans} value(s) "
                                 f"(or one for all), got {len(p[key])}")
            p[key] = p[key] * in_chans if len(p[key]) == 1 else p[key]
    if any(v <= 0 for v in p.get("std", ())):
        raise ModelError(f"std values must be positive, got {p['std']}")
    if "crop_pct" in p and not (isinstance(p["crop_pct"], (int, float)) and 0.0 < p["crop_pct"] <= 1.0):
        raise ModelError(f"crop_pct must be a number in (0, 1], got {p['crop_pct']!r}")
    if p.get("interpolation", "bicubic") not in INTERPOLATIONS:
        raise ModelError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {p['interpolation']!r}")
    return p


def weights_file(path: str | Path) -> Path:
    """The weights of a checkpoint given as a file or as a folder (``save_pretrained``'s, a hub snapshot)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    if list(path.glob("*.index.json")):
        raise ModelError(f"{path}: sharded checkpoints (*.index.json) are not supported; a ViT this size fits one file")
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".onnx", *TORCH_SUFFIXES))
    if len(candidates) != 1:
        raise ModelError(f"{path}: a checkpoint folder needs one of {', '.join(WEIGHT_FILES)} or exactly one "
                         f".safetensors/.pth/.pt/.bin/.onnx file, found {[p.name for p in candidates] or 'none'}")
    return candidates[0]


def load_checkpoint(path: str | Path, heads: int | None = None, img_size: int | None = None,
                    preprocess: dict | None = None) -> VisionTransformer | swin.SwinTransformer:
    """Build the model a checkpoint describes and load its weights exactly (no key may be missing or left over).
    ``preprocess`` (any of mean, std, crop_pct, interpolation) wins over what the checkpoint and its folder say."""
    from tsptq.model import hf_layout

    weights = weights_file(path)
    found: dict = {}  # preprocessing the checkpoint or its folder states
    origin = None     # where ``found`` was read
    ln_eps = None
    onnx_file = weights.suffix == ".onnx"
    if onnx_file:  # mapped by its data flow, then checked against onnxruntime below
        from tsptq.model import onnx_import

        sd, meta = onnx_import.state_dict_from_onnx(weights)
        heads, ln_eps = heads or meta["num_heads"], meta["ln_eps"]
    else:
        sd = load_state_dict(weights)
    swin_masks = None  # not None: a Swin (the shapes of any attn_mask buffers it stored)
    if not onnx_file and swin_layout.is_swin(sd):
        sd, swin_masks = swin_layout.to_timm(sd, weights)
    stored = None if onnx_file else _stored_config(weights)
    if onnx_file:
        processor_file = weights.parent / "preprocessor_config.json"
        processor = hf_layout.read_json(processor_file)
        if processor:
            found, origin = hf_layout.preprocess_from_processor(processor, processor_file), processor_file
    elif stored:  # our own checkpoints say what shapes cannot: heads (ViT), image size (Swin) and preprocessing
        if swin_masks is None:
            heads = heads or stored["num_heads"]
        else:
            img_size = img_size or stored.get("img_size")
        found, origin = {k: stored[k] for k in IMAGENET_PREPROCESS if k in stored}, weights
    elif hf_layout.is_hf_layout(sd):
        config = hf_layout.read_json(weights.parent / "config.json") or {}
        model_type = hf_layout.model_type_of(sd, config)
        sd = hf_layout.to_timm(sd, config, weights)
        heads = heads or config.get("num_attention_heads")
        ln_eps = config.get("layer_norm_eps", hf_layout.DEFAULT_LN_EPS[model_type])
        processor_file = weights.parent / "preprocessor_config.json"
        processor = hf_layout.read_json(processor_file)
        if processor:
            found, origin = hf_layout.preprocess_from_processor(processor, processor_file), processor_file
        if model_type == "dinov2":  # transformers resizes the position grid to any input: to the processor's crop
            img_size = img_size or hf_layout.processor_input_size(processor or {})
            if img_size is not None:
                patch = sd["patch_embed.proj.weight"].shape[-1]
                hf_layout.resize_position_grid(sd, patch, 1 + ("dist_token" in sd), img_size)
    else:
        timm_config = _timm_hub_config(weights.parent / "config.json")
        if timm_config:
            found, origin = timm_config, weights.parent / "config.json"
    in_chans = sd["patch_embed.proj.weight"].shape[1] if "patch_embed.proj.weight" in sd else 3
    try:  # what the user gave replaces what the files say before anything is checked
        merged = check_preprocess({**found, **(preprocess or {})}, in_chans)
    except ModelError as e:
        if origin is None or not (found.keys() - (preprocess or {}).keys()):
            raise
        raise ModelError(f"{e} (read from {origin}; pass --mean/--std/--crop-pct/--interpolation to override)") from None
    if swin_masks is not None:
        return _load_swin(sd, swin_masks, heads, img_size, merged, in_chans, path)
    model = VisionTransformer(infer_config(sd, heads=heads, img_size=img_size, preprocess=merged, ln_eps=ln_eps))
    _load_strict(model, sd, path)
    if onnx_file:
        from tsptq.model.onnx_import import check_against_onnxruntime

        check_against_onnxruntime(model.eval(), weights)
    return model.eval()


def _load_swin(sd: dict[str, torch.Tensor], masks: dict, heads: int | None, img_size: int | None, preprocess: dict,
               in_chans: int, source: object) -> swin.SwinTransformer:
    if heads is not None:
        raise ModelError("--heads does not apply to a Swin checkpoint: its heads per stage are read from the "
                         "relative_position_bias_table shapes")
    defaults = {k: getattr(swin.SwinConfig, k) for k in IMAGENET_PREPROCESS}  # timm's Swin cfg (crop 0.9)
    cfg = swin_layout.infer_config(sd, img_size, check_preprocess({**defaults, **preprocess}, in_chans), masks=masks,
                                   source=source)
    model = swin.SwinTransformer(cfg)
    swin_layout.check_stored_masks(model, masks, source)
    _load_strict(model, sd, source)
    return model.eval()


def _timm_hub_config(path: Path) -> dict | None:
    """The preprocessing of a timm hub snapshot's ``config.json`` (``pretrained_cfg``); None for any other file
    (a config.json beside a plain checkpoint may be anything)."""
    from tsptq.model.hf_layout import read_json

    try:
        data = read_json(path)
    except ModelError:  # unreadable, or not an object
        return None
    cfg = data.get("pretrained_cfg") if data else None
    return {k: v for k, v in cfg.items() if k in IMAGENET_PREPROCESS} if isinstance(cfg, dict) else None


def _stored_config(path: Path) -> dict | None:
    """The ViTConfig tsptq writes into a safetensors file's metadata (``tsptq_config``), if any."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta["tsptq_config"]) if "tsptq_config" in meta else None


def _load_strict(model: VisionTransformer | swin.SwinTransformer, sd: dict[str, torch.Tensor], source: object) -> None:
    # timm's extra modules at inference (fc_norm, norm_pre, q_norm/k_norm as Identity, head_drop) have no parameters,
    # so a timm ViT/DeiT state dict matches ours key for key: nothing needs dropping.
    expected = model.state_dict()
    problems = []
    if missing := sorted(expected.keys() - sd.keys()):
        problems.append(f"missing keys: {some_of(missing)}")
    if unexpected := sorted(sd.keys() - expected.keys()):
        problems.append(f"unexpected keys: {some_of(unexpected)}")
    if shapes := [f"{k} {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
                  if k in sd and sd[k].shape != v.shape]:
        problems.append(f"shape mismatches: {some_of(shapes)}")
    if problems:
        raise ModelError(f"{source}: does not match the inferred {_describe(model.cfg)}\n  " + "\n  ".join(problems))
    model.load_state_dict(sd, strict=True)


def _describe(cfg: ViTConfig | swin.SwinConfig) -> str:
    if isinstance(cfg, swin.SwinConfig):
        return cfg.describe()
    return (f"ViT (img {cfg.img_size}, patch {cfg.patch_size}, dim {cfg.embed_dim}, depth {cfg.depth}, "
            f"{cfg.num_heads} heads, {cfg.num_classes} classes{', distilled' if cfg.dist_token else ''}"
            f"{', head on class token + patch mean' if cfg.global_pool == 'token+avg' else ''})")




def resolve_model(name: str | None, checkpoint: str | Path | None = None, heads: int | None = None,
                  img_size: int | None = None, seed: int = 0, preprocess: dict | None = None
                  ) -> VisionTransformer | swin.SwinTransformer:
    """A checkpoint file if given, else a reference model (trained weights), else a timm config (random weights).
    ``preprocess`` (any of mean, std, crop_pct, interpolation) replaces the model's own preprocessing."""
    if checkpoint is not None:
        return load_checkpoint(checkpoint, heads=heads, img_size=img_size, preprocess=preprocess)
    model = _named_model(name, heads, img_size, seed)
    if preprocess:
        model.cfg = dataclasses.replace(model.cfg, **check_preprocess(preprocess, model.cfg.in_chans))
    return model


def _named_model(name: str | None, heads: int | None, img_size: int | None, seed: int
                 ) -> VisionTransformer | swin.SwinTransformer:
    from tsptq.model import zoo  # lazy: pulls in the data set code

    if name in zoo.REFERENCE_MODELS:
        cfg = zoo.REFERENCE_MODELS[name].config
        if heads not in (None, cfg.num_heads) or img_size not in (None, cfg.img_size):
            raise ModelError(f"{name} is a trained model with {cfg.num_heads} heads at img_size {cfg.img_size}; "
                             "heads/img_size can't be changed")
        return zoo.load_reference(name)
    if name in NAMED_CONFIGS:
        overrides = {"num_heads": _check_heads(NAMED_CONFIGS[name].embed_dim, heads)} if heads else {}
        if img_size:
            overrides["img_size"] = img_size
        with torch.random.fork_rng(devices=[]):  # deterministic weights without disturbing the caller's RNG
            torch.manual_seed(seed)
            return create_model(name, **overrides).eval()
    if name in swin.NAMED_CONFIGS:
        if heads:
            raise ModelError(f"{name}: --heads does not apply to a Swin (its heads per stage are part of the config)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return swin.create_model(name, **({"img_size": img_size} if img_size else {})).eval()
    known = ", ".join(sorted(zoo.REFERENCE_MODELS) + sorted(NAMED_CONFIGS) + sorted(swin.NAMED_CONFIGS))
    what = f"unknown model {name!r}" if name else "no model given"
    raise ModelError(f"{what}; known names: {known} (or pass a checkpoint file)")
